// camlbeam-etf: look at and make External Term Format bytes.
//   camlbeam-etf print [FILE|-]                 the term in Erlang syntax
//   camlbeam-etf encode [--minor-version 1|2] [--compress N] 'TERM' [-o FILE]
// Bad input is reported on stderr with exit status 1; nothing here may crash on it.
#include <camlbeam/etf/etf.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

namespace etf = camlbeam::etf;

namespace {

std::vector<std::uint8_t> read_all(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  if (path == "-") {
    std::cin.unsetf(std::ios::skipws);
    bytes.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    return bytes;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return bytes;
}

int print(const std::string& path, bool allow_trailing) {
  const std::vector<std::uint8_t> bytes = read_all(path);
  etf::DecodeOptions options;
  options.allow_trailing_bytes = allow_trailing;
  std::cout << etf::decode_term(bytes, options).to_string() << '\n';
  return 0;
}

int encode(const std::string& text, int minor_version, int level, const std::string& out_path) {
  const etf::Term term = etf::parse_term(text);
  const std::vector<std::uint8_t> bytes =
      etf::encode(term, etf::EncodeOptions{minor_version, level});
  if (out_path.empty() || out_path == "-") {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw std::runtime_error("cannot write " + out_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Look at and make Erlang External Term Format bytes"};
  app.require_subcommand(1);

  std::string input = "-";
  bool allow_trailing = false;
  auto* print_cmd = app.add_subcommand("print", "Print an encoded term in Erlang syntax");
  print_cmd->add_option("file", input, "File with the bytes (131 ...), or - for stdin");
  print_cmd->add_flag("--allow-trailing", allow_trailing, "Ignore bytes after the term, as binary_to_term/1 does");

  std::string text, output;
  int minor_version = 1, level = 0;
  auto* encode_cmd = app.add_subcommand("encode", "Encode a term written in Erlang syntax");
  encode_cmd->add_option("term", text, "The term, e.g. '{ok, [1,2,3], #{a => <<\"b\">>}}'")->required();
  encode_cmd->add_option("--minor-version", minor_version, "1 (OTP 25 default) or 2 (UTF-8 atoms)")
      ->check(CLI::Range(1, 2));
  encode_cmd->add_option("--compress", level, "zlib level 0..9, as term_to_binary(T, [{compressed, N}])")
      ->check(CLI::Range(0, 9));
  encode_cmd->add_option("-o,--output", output, "Output file (default: stdout)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*print_cmd) return print(input, allow_trailing);
    return encode(text, minor_version, level, output);
  } catch (const etf::DecodeException& e) {
    std::cerr << "camlbeam-etf: cannot decode: " << e.what() << '\n';
  } catch (const etf::ParseError& e) {
    std::cerr << "camlbeam-etf: cannot parse the term: " << e.what() << '\n';
  } catch (const std::exception& e) {
    std::cerr << "camlbeam-etf: " << e.what() << '\n';
  }
  return 1;
}
