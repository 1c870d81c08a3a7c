// c_node: the C baseline of the node benchmark (bench/node/README.md).
//
// What a careful C programmer writes on libei to answer gen_server:call from Erlang nodes:
// an ei node registered with EPMD (loopback only) that answers, whatever the registered
// name the call is addressed to,
//   {'$gen_call', {From, Tag}, {call, id, [Payload]}}  with  {Tag, {ok, Payload}}
//   {'$gen_call', {From, Tag}, {is_auth, Node}}        with  {Tag, yes}   (net_adm:ping)
// Payload is decoded into the C tree of bench/ei_tree.hpp (malloc'd nodes, copied binaries,
// as c_port.cpp does) and re-encoded from it; Tag is opaque (OTP 25 sends [alias | Ref]),
// so its bytes are copied into the reply as they came.
//
// libei serves one connection per fd and blocks on it, so one thread polls the listen fd,
// every connection and stdin, and reads one message from whichever is ready: several
// Erlang nodes can call at once, and their calls are answered one after another.
//
//   c_node --sname NAME --cookie COOKIE [--address 127.X.Y.Z] [--idle-exit SECONDS]
// prints "ready NAME@HOST" on stdout once published, and exits 0 at end of file on stdin
// (the port that started it closed) or after SECONDS without any event (default 600). It
// listens on --address only (default 127.0.0.1): the address this host's name resolves to,
// which Erlang nodes connect to, and which must be a loopback one.
#include "../ei_buffer.hpp"
#include "../ei_tree.hpp"

#include <arpa/inet.h>
#include <ei.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using camlbeam::bench::EiBuffer;
using camlbeam::bench::EiNode;
using camlbeam::bench::EiTreeScratch;

// Bounds on one socket operation once poll said the fd is ready: a 1 MB message arrives in
// milliseconds, so only a stuck peer reaches them.
constexpr unsigned receive_timeout_ms = 10000;
constexpr unsigned send_timeout_ms = 10000;
constexpr unsigned accept_timeout_ms = 5000;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "c_node: %s (erl_errno %d)\n", what, erl_errno);
  std::_Exit(2);
}

void note(const char* what) { std::fprintf(stderr, "c_node: %s\n", what); }

// A socket libei opened (listen or connection): ei_close_connection also drops libei's
// per-fd state.
class EiSocket {
 public:
  explicit EiSocket(int fd) : fd_(fd) {}
  ~EiSocket() {
    if (fd_ >= 0) ei_close_connection(fd_);
  }
  EiSocket(EiSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  EiSocket& operator=(EiSocket&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  EiSocket(const EiSocket&) = delete;
  EiSocket& operator=(const EiSocket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// The EPMD registration lives as long as this fd is open.
class Publication {
 public:
  explicit Publication(int fd) : fd_(fd) {}
  ~Publication() { ::close(fd_); }
  Publication(const Publication&) = delete;
  Publication& operator=(const Publication&) = delete;

 private:
  int fd_;
};

// One connected Erlang node: its socket and the buffer its messages are received into
// (libei grows it to the largest message and it stays that size).
struct Connection {
  EiSocket socket;
  EiBuffer in;
  explicit Connection(int fd) : socket(fd) {}
};

class CNode {
 public:
  CNode(ei_cnode& ec, int listen_fd) : ec_(ec), listener_(listen_fd) {}

  // Serves until stdin closes or nothing happens for idle_exit_ms.
  void run(int idle_exit_ms) {
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({STDIN_FILENO, POLLIN, 0});
      fds.push_back({listener_.fd(), POLLIN, 0});
      for (const auto& c : connections_) fds.push_back({c->socket.fd(), POLLIN, 0});
      const int ready = ::poll(fds.data(), fds.size(), idle_exit_ms);
      if (ready < 0) {
        if (errno == EINTR) continue;
        die("poll failed");
      }
      if (ready == 0) return note("idle for too long, exiting");
      if (fds[0].revents != 0 && stdin_closed()) return;
      if (fds[1].revents != 0) accept_one();
      // Back to front, so that dropping a connection leaves the indices before it valid;
      // fds[i + 2] is connections_[i] (accept_one appends after them).
      for (std::size_t i = fds.size() - 2; i-- > 0;) {
        if (fds[i + 2].revents != 0 && !serve_one(*connections_[i]))
          connections_.erase(connections_.begin() + static_cast<long>(i));
      }
    }
  }

 private:
  ei_cnode& ec_;
  EiSocket listener_;
  std::vector<std::unique_ptr<Connection>> connections_;  // EiBuffer does not move
  EiBuffer out_;
  EiTreeScratch scratch_;
  EiNode args_;  // the argument list of the call being answered

  static bool stdin_closed() {
    char sink[256];
    const ssize_t n = ::read(STDIN_FILENO, sink, sizeof sink);
    return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
  }

  void accept_one() {
    ErlConnect peer{};
    const int fd = ei_accept_tmo(&ec_, listener_.fd(), &peer, accept_timeout_ms);
    if (fd < 0) return note("a handshake failed (wrong cookie, or the peer gave up)");
    // Erlang's distribution sets TCP_NODELAY on its side; without it here a reply written
    // just after a tick's answer can wait for the peer's delayed ACK.
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connections_.push_back(std::make_unique<Connection>(fd));
  }

  // Reads one message; false when the connection is finished.
  bool serve_one(Connection& c) {
    // libei reports a closed connection with EIO, the same error as a control message it
    // does not know (below): look first, so that the two cannot be confused.
    char byte = 0;
    const ssize_t peeked = ::recv(c.socket.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (peeked == 0) return false;
    if (peeked < 0) return errno == EAGAIN || errno == EINTR;
    erlang_msg msg{};
    c.in.x.index = 0;
    switch (ei_xreceive_msg_tmo(c.socket.fd(), &msg, &c.in.x, receive_timeout_ms)) {
      case ERL_TICK: return true;  // libei has answered it
      case ERL_MSG: break;
      default:
        // Every gen_server:call first sends MONITOR_P (and DEMONITOR_P after the answer),
        // which libei reads whole and then reports as EIO: skip it and keep receiving.
        // Any other error (a timeout in mid-message, a malformed header) leaves the stream
        // out of step, so the connection ends.
        return erl_errno == EIO;
    }
    if (msg.msgtype != ERL_REG_SEND && msg.msgtype != ERL_SEND) return true;  // links, exits: nothing to do
    return handle(c.socket.fd(), c.in.x.buff);
  }

  // A message: {'$gen_call', {From, Tag}, Request}. False only when the answer could not be
  // sent (the connection is then finished); anything else is logged and skipped.
  bool handle(int fd, char* message) {
    int index = 0;
    int version = 0;
    int arity = 0;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid from{};
    if (ei_decode_version(message, &index, &version) < 0 || ei_decode_tuple_header(message, &index, &arity) < 0 ||
        arity != 3 || ei_decode_atom(message, &index, atom) < 0 || std::strcmp(atom, "$gen_call") != 0 ||
        ei_decode_tuple_header(message, &index, &arity) < 0 || arity != 2 || ei_decode_pid(message, &index, &from) < 0) {
      note("skipped a message that is not a gen_server call");
      return true;
    }
    const int tag_start = index;
    if (ei_skip_term(message, &index) < 0) return true;
    const int tag_end = index;
    if (ei_decode_tuple_header(message, &index, &arity) < 0 || ei_decode_atom(message, &index, atom) < 0) {
      note("skipped a call whose request is not a tagged tuple");
      return true;
    }
    out_.x.index = 0;
    if (ei_x_encode_version(&out_.x) < 0 || ei_x_encode_tuple_header(&out_.x, 2) < 0 ||
        ei_x_append_buf(&out_.x, message + tag_start, tag_end - tag_start) < 0)
      die("cannot encode a reply");
    bool encoded = false;
    if (arity == 3 && std::strcmp(atom, "call") == 0) {
      encoded = reply_to_call(message, index);
    } else if (arity == 2 && std::strcmp(atom, "is_auth") == 0) {
      encoded = ei_x_encode_atom(&out_.x, "yes") == 0;
    } else {
      note("skipped an unknown request");
      return true;
    }
    if (!encoded) die("cannot encode a reply");
    return ei_send_tmo(fd, &from, out_.x.buff, out_.x.index, send_timeout_ms) == 0;
  }

  // {call, Fun, Args} from `index` (after the tag `call`): appends {ok, hd(Args)} for `id`.
  bool reply_to_call(char* message, int index) {
    char fun[MAXATOMLEN_UTF8];
    if (ei_decode_atom(message, &index, fun) < 0) return encode_error("badarg");
    if (std::strcmp(fun, "id") != 0) return encode_error("undef");
    // ei_tree_decode reads a whole external term, version byte first: the last byte of
    // `id` (already decoded) stands in for one while Args is decoded.
    char* const version_slot = message + index - 1;
    const char saved = *version_slot;
    *version_slot = static_cast<char>(131);  // VERSION_MAGIC; libei keeps the name private
    const bool decoded = camlbeam::bench::ei_tree_decode(version_slot, args_, scratch_);
    *version_slot = saved;
    if (!decoded) return encode_error("badarg");
    bool encoded = false;
    if (args_.kind == EiNode::Kind::string && args_.bytes.size == 1) {
      // [Small] with Small in 0..255 comes as STRING_EXT, which the tree keeps whole.
      encoded = ei_x_encode_tuple_header(&out_.x, 2) == 0 && ei_x_encode_atom(&out_.x, "ok") == 0 &&
                ei_x_encode_long(&out_.x, static_cast<unsigned char>(args_.bytes.data[0])) == 0;
    } else if (args_.kind == EiNode::Kind::list && args_.children.count == 2 &&
               args_.children.items[1].kind == EiNode::Kind::nil) {
      // A proper list of one: the element, then the tail.
      encoded = ei_x_encode_tuple_header(&out_.x, 2) == 0 && ei_x_encode_atom(&out_.x, "ok") == 0 &&
                camlbeam::bench::ei_tree_encode(out_.x, args_.children.items[0], scratch_);
    } else {
      encoded = encode_error("badarity");
    }
    camlbeam::bench::ei_tree_free(args_, scratch_);
    return encoded;
  }

  bool encode_error(const char* reason) {
    return ei_x_encode_tuple_header(&out_.x, 2) == 0 && ei_x_encode_atom(&out_.x, "error") == 0 &&
           ei_x_encode_atom(&out_.x, reason) == 0;
  }
};

struct Options {
  std::string sname;
  std::string cookie;
  in_addr address{htonl(INADDR_LOOPBACK)};
  int idle_exit_s = 600;
};

constexpr const char* usage =
    "usage: c_node --sname NAME --cookie COOKIE [--address 127.X.Y.Z] [--idle-exit SECONDS] (NAME without @HOST)";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--sname") o.sname = argv[i + 1];
    else if (flag == "--cookie") o.cookie = argv[i + 1];
    else if (flag == "--idle-exit") o.idle_exit_s = std::atoi(argv[i + 1]);
    else if (flag == "--address") {
      if (::inet_pton(AF_INET, argv[i + 1], &o.address) != 1 || (ntohl(o.address.s_addr) >> 24) != 127)
        die("--address must be an IPv4 loopback address (127.X.Y.Z)");
    } else die(usage);
  }
  if (argc % 2 == 0 || o.sname.empty() || o.cookie.empty() || o.sname.find('@') != std::string::npos ||
      o.idle_exit_s <= 0)
    die(usage);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  if (ei_init() != 0) die("ei_init failed");
  ei_cnode ec{};
  // Creation: anything that differs from the previous incarnation of the same name, so
  // that pids of an earlier run are not taken for ours.
  const auto creation = static_cast<unsigned>(std::time(nullptr) & 0x7fffffff) | 4u;
  if (ei_connect_init(&ec, options.sname.c_str(), options.cookie.c_str(), creation) < 0) die("ei_connect_init failed");
  in_addr address = options.address;  // ei_xlisten takes it by non-const pointer
  int port = 0;
  const int listen_fd = ei_xlisten(&ec, &address, &port, 8);
  if (listen_fd < 0) die("ei_xlisten failed");
  CNode node(ec, listen_fd);
  const int publish_fd = ei_publish(&ec, port);
  if (publish_fd < 0) die("ei_publish failed (is epmd running?)");
  const Publication publication(publish_fd);
  std::printf("ready %s\n", ei_thisnodename(&ec));
  std::fflush(stdout);
  node.run(options.idle_exit_s * 1000);
  return 0;
}
