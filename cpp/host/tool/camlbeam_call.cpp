// camlbeam-call: runs one call through the host's request path, for trying plugins without
// Erlang. Native (camlbeam-call) and bytecode (camlbeam-call-bytecode) flavours.
//
//   camlbeam-call [-l PLUGIN]... [--max-reply-size BYTES] FUN [ARGS]
//
// FUN is a function's name, or MODULE:FUNCTION for {Module, Function} (a plugin's module is
// named after its file: mathlib:fib). ARGS is the argument list in Erlang syntax ("[30]"; default []). Prints the answer,
// {ok, Result} or {error, Reason}, in Erlang syntax. Exit status: 0 for {ok, _}, 1 for
// {error, _}, 2 for a usage error, a plugin that does not load or a request refused.
#include <camlbeam/etf/etf.hpp>
#include <camlbeam/host/etf_request.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/runtime.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace etf = camlbeam::etf;
namespace host = camlbeam::host;

int usage(const char* program) {
  std::fprintf(stderr, "usage: %s [-l PLUGIN]... [--max-reply-size BYTES] [MODULE:]FUN [ARGS]\n", program);
  return 2;
}

int run(int argc, char** argv) {
  std::vector<std::string> plugins;
  host::EtfOptions options;
  std::vector<std::string_view> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-l" && i + 1 < argc) {
      plugins.emplace_back(argv[++i]);
    } else if (arg == "--max-reply-size" && i + 1 < argc) {
      options.max_reply_size = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg.starts_with("-") && arg != "-") {
      return usage(argv[0]);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty() || positional.size() > 2) return usage(argv[0]);

  // Sys.argv of the plugins: the program name only.
  host::Runtime runtime(1, argv);
  host::Host h(runtime);
  for (const std::string& plugin : plugins) {
    if (const std::optional<host::Error> e = h.load(plugin)) {
      std::fprintf(stderr, "%s: %s: %s\n", argv[0], std::string(host::to_string(e->code)).c_str(), e->message.c_str());
      return 2;
    }
  }
  const etf::Term args = etf::parse_term(positional.size() == 2 ? positional[1] : "[]");
  const etf::Term ref = etf::Term::atom("camlbeam_call");
  // As Erlang writes a call of Module:Function; a name without a colon is the function alone.
  const std::string_view name = positional[0];
  const std::size_t colon = name.find(':');
  const etf::Term fun = colon == std::string_view::npos
                            ? etf::Term::atom(name)
                            : etf::Term::tuple({etf::Term::atom(name.substr(0, colon)),
                                                etf::Term::atom(name.substr(colon + 1))});
  const etf::Term request = etf::Term::tuple({etf::Term::atom("call"), ref, fun, args});
  etf::ByteBuffer reply;
  const host::Outcome outcome = host::handle_etf(h, etf::encode(request), reply, options);
  if (!outcome.replied()) {
    std::fprintf(stderr, "%s: %s: %s\n", argv[0], std::string(host::to_string(outcome.error->code)).c_str(),
                 outcome.error->message.c_str());
    return 2;
  }
  const etf::Term answer = etf::decode_term(reply.span()).tuple_elements()[1];
  std::printf("%s\n", answer.to_string().c_str());
  return answer.tuple_elements()[0].is_atom("ok") ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 2;
  }
}
