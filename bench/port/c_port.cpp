// c_port: the C baseline of the port benchmarks (bench/port/README.md).
//
// A port program a careful C programmer would write on libei, speaking exactly
// camlbeam-port's protocol (cpp/port/README.md): requests on fd 3, frames to Erlang on
// fd 4, {packet, 4} framing, answers as two terms back to back (an envelope {reply, Ref},
// then the payload). Every `call` is an identity: the request is decoded element by element
// with ei_decode_* (Ref into an erlang_ref, Fun into an atom buffer, Args into the libei C
// tree of bench/ei_tree.hpp), and the first argument is re-encoded from that tree with
// ei_x_encode_* as {ok, Arg}. Because it is the same protocol, the Erlang side runs it
// unchanged with ocaml:start_link(#{executable => Path}): the difference between this
// program and camlbeam-port is then only what happens inside the port program.
//
// It batches as camlbeam-port does: it reads whatever the pipe holds, answers every
// complete frame into one output buffer, and writes that buffer before it blocks on the
// next read. It exits 0 at end of file on fd 3.
#include "../ei_buffer.hpp"
#include "../ei_tree.hpp"

#include <ei.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using camlbeam::bench::EiBuffer;
using camlbeam::bench::EiNode;
using camlbeam::bench::EiTreeScratch;

constexpr int in_fd = 3;
constexpr int out_fd = 4;
constexpr std::size_t max_frame = std::size_t{1} << 30;  // as camlbeam-port's default

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "c_port: %s\n", what);
  std::_Exit(2);
}

bool write_all(const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(out_fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// One reply frame appended to `out`: length, {reply, Ref}, payload written by `payload`.
template <class Payload>
void append_reply(ei_x_buff& out, const erlang_ref& ref, Payload&& payload) {
  const int start = out.index;
  const char header[4] = {0, 0, 0, 0};
  if (ei_x_append_buf(&out, header, 4) < 0 || ei_x_encode_version(&out) < 0 || ei_x_encode_tuple_header(&out, 2) < 0 ||
      ei_x_encode_atom(&out, "reply") < 0 || ei_x_encode_ref(&out, &ref) < 0 || ei_x_encode_version(&out) < 0 ||
      !payload(out))
    die("cannot encode a reply");
  const auto size = static_cast<std::uint32_t>(out.index - start - 4);
  auto* p = reinterpret_cast<unsigned char*>(out.buff + start);
  p[0] = static_cast<unsigned char>(size >> 24);
  p[1] = static_cast<unsigned char>(size >> 16);
  p[2] = static_cast<unsigned char>(size >> 8);
  p[3] = static_cast<unsigned char>(size);
}

struct Port {
  EiBuffer out;
  EiTreeScratch scratch;
  EiNode args;  // the decoded argument list of the current call

  // Skips a frame that is not a request we know (camlbeam-port logs and skips them).
  static void refuse(const char* why) { std::fprintf(stderr, "c_port: skipped a frame: %s\n", why); }

  // frame: one ETF term, version byte included. Writable: see decode_args.
  void handle(char* frame, std::size_t size) {
    int index = 0;
    int version = 0;
    int arity = 0;
    char tag[MAXATOMLEN_UTF8];
    if (ei_decode_version(frame, &index, &version) < 0 || ei_decode_tuple_header(frame, &index, &arity) < 0 ||
        ei_decode_atom(frame, &index, tag) < 0)
      return refuse("not a tagged tuple");
    // Protocol 2: a call or a load carries its timeout last; every request is answered at
    // once here, so a cancel (its caller gave up) always comes too late to matter.
    if (std::strcmp(tag, "call") == 0 && (arity == 4 || arity == 5)) return call(frame, index, size, arity == 5);
    if (std::strcmp(tag, "hello") == 0 && arity == 3) return hello(frame, index);
    if (std::strcmp(tag, "load") == 0 && (arity == 3 || arity == 4)) return load(frame, index);
    if (std::strcmp(tag, "cast") == 0 || std::strcmp(tag, "erl_reply") == 0 || std::strcmp(tag, "cancel") == 0)
      return;  // no answer
    refuse("unknown request");
  }

  void hello(const char* frame, int index) {
    erlang_ref ref{};
    int pairs = 0;
    if (ei_decode_ref(frame, &index, &ref) < 0 || ei_decode_map_header(frame, &index, &pairs) < 0)
      return refuse("bad hello");
    for (int i = 0; i < pairs; ++i) {
      char key[MAXATOMLEN_UTF8];
      long id = 0;
      erlang_pid pid{};
      if (ei_decode_atom(frame, &index, key) < 0) return refuse("bad hello key");
      const bool ok = std::strcmp(key, "worker_id") == 0    ? ei_decode_long(frame, &index, &id) == 0
                      : std::strcmp(key, "worker_pid") == 0 ? ei_decode_pid(frame, &index, &pid) == 0
                                                            : ei_skip_term(frame, &index) == 0;
      if (!ok) return refuse("bad hello value");
    }
    append_reply(out.x, ref, [](ei_x_buff& x) {
      return ei_x_encode_tuple_header(&x, 2) == 0 && ei_x_encode_atom(&x, "ok") == 0 &&
             ei_x_encode_map_header(&x, 4) == 0 && ei_x_encode_atom(&x, "protocol") == 0 &&
             ei_x_encode_long(&x, 2) == 0 && ei_x_encode_atom(&x, "flavour") == 0 &&
             ei_x_encode_atom(&x, "native") == 0 && ei_x_encode_atom(&x, "ocaml_version") == 0 &&
             ei_x_encode_binary(&x, "none", 4) == 0 && ei_x_encode_atom(&x, "os_pid") == 0 &&
             ei_x_encode_long(&x, static_cast<long>(::getpid())) == 0;
    });
  }

  void load(const char* frame, int index) {
    erlang_ref ref{};
    if (ei_decode_ref(frame, &index, &ref) < 0 || ei_skip_term(frame, &index) < 0) return refuse("bad load");
    append_reply(out.x, ref, [](ei_x_buff& x) { return ei_x_encode_atom(&x, "ok") == 0; });
  }

  void call(char* frame, int index, std::size_t size, bool with_timeout) {
    erlang_ref ref{};
    char fun[MAXATOMLEN_UTF8];
    if (ei_decode_ref(frame, &index, &ref) < 0 || ei_decode_atom(frame, &index, fun) < 0)
      return refuse("bad call");
    // ei_tree_decode starts at a version byte: the byte before Args (the end of Fun,
    // already decoded) becomes one for the time of the decode.
    char* at = frame + index - 1;
    const char saved = *at;
    *at = static_cast<char>(131);  // VERSION_MAGIC: libei keeps its name private
    int end = 0;
    const bool decoded = camlbeam::bench::ei_tree_decode(at, args, scratch, &end);
    *at = saved;
    index += end - 1;
    // The timeout, when there is one, is all that follows (an integer or infinity).
    if (decoded && with_timeout && ei_skip_term(frame, &index) < 0) index = -1;
    if (!decoded || index < 0 || static_cast<std::size_t>(index) != size) {
      if (decoded) camlbeam::bench::ei_tree_free(args, scratch);
      return refuse("bad call arguments");
    }
    append_reply(out.x, ref, [this](ei_x_buff& x) {
      if (ei_x_encode_tuple_header(&x, 2) < 0) return false;
      // A list of small integers ([42]) comes as STRING_EXT, which the tree keeps whole.
      if (args.kind == EiNode::Kind::string && args.bytes.size > 0)
        return ei_x_encode_atom(&x, "ok") == 0 &&
               ei_x_encode_long(&x, static_cast<unsigned char>(args.bytes.data[0])) == 0;
      // Args is a proper list: children are the elements, then the tail ([]).
      if (args.kind != EiNode::Kind::list || args.children.count < 2) {
        return ei_x_encode_atom(&x, "error") == 0 && ei_x_encode_tuple_header(&x, 3) == 0 &&
               ei_x_encode_atom(&x, "badarity") == 0 && ei_x_encode_long(&x, 1) == 0 &&
               ei_x_encode_long(&x, 0) == 0;
      }
      return ei_x_encode_atom(&x, "ok") == 0 &&
             camlbeam::bench::ei_tree_encode(x, args.children.items[0], scratch);
    });
    camlbeam::bench::ei_tree_free(args, scratch);
  }

  // Serves requests until end of file on fd 3.
  void run() {
    std::vector<char> in(std::size_t{64} << 10);
    std::size_t have = 0;  // bytes in `in`
    for (;;) {
      // Answer every complete frame that has arrived.
      std::size_t pos = 0;
      for (;;) {
        if (have - pos < 4) break;
        const auto* h = reinterpret_cast<const unsigned char*>(in.data() + pos);
        const std::size_t len = std::size_t{h[0]} << 24 | std::size_t{h[1]} << 16 | std::size_t{h[2]} << 8 | h[3];
        if (len > max_frame) die("frame too long");
        if (have - pos - 4 < len) {
          if (in.size() < len + 4) {  // make room for the whole frame
            std::memmove(in.data(), in.data() + pos, have - pos);
            have -= pos;
            pos = 0;
            in.resize(len + 4);
          }
          break;
        }
        handle(in.data() + pos + 4, len);
        pos += 4 + len;
      }
      if (pos > 0) {
        std::memmove(in.data(), in.data() + pos, have - pos);
        have -= pos;
      }
      // Flush the answers before blocking for more input.
      if (out.x.index > 0) {
        if (!write_all(out.x.buff, static_cast<std::size_t>(out.x.index))) die("cannot write to fd 4");
        out.x.index = 0;
      }
      if (have == in.size()) in.resize(in.size() * 2);
      ssize_t n = 0;
      do n = ::read(in_fd, in.data() + have, in.size() - have);
      while (n < 0 && errno == EINTR);
      if (n < 0) die("cannot read fd 3");
      if (n == 0) return;  // the port was closed
      have += static_cast<std::size_t>(n);
    }
  }
};

}  // namespace

int main() {
  Port port;
  port.run();
  return 0;
}
