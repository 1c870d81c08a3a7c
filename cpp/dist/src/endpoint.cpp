#include <camlbeam/dist/endpoint.hpp>

#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/event_loop.hpp>
#include <camlbeam/dist/handshake.hpp>
#include <camlbeam/dist/tls.hpp>

#include "resolver.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace camlbeam::dist {

namespace {

// epoll keys: connections count up from first_connection_key and are never reused, so an
// event still in a batch for a connection dropped earlier in it finds nothing.
constexpr std::uint64_t key_wake = 0;
constexpr std::uint64_t key_listener = 1;
constexpr std::uint64_t first_connection_key = 2;
constexpr std::size_t read_chunk = 64 * 1024;
// Reads per readiness before the loop turns to the others: one busy peer cannot starve them.
constexpr int reads_per_wakeup = 16;
constexpr int accepts_per_wakeup = 64;
constexpr std::uint32_t base_interest = EPOLLIN | EPOLLRDHUP;
// After accept fails (out of descriptors, say), the listener rests this long: a listener
// that stays readable would otherwise spin the loop.
constexpr std::chrono::milliseconds accept_pause{100};

EndpointEvent make_event(EndpointEvent::Kind kind, std::string peer, Error error = {}) {
  EndpointEvent e;
  e.kind = kind;
  e.peer = std::move(peer);
  e.error = std::move(error);
  return e;
}

// What the loop hands the consumer. Its descriptor, once asked for, is readable
// while it is not empty; a consumer that waits with wait_nonempty costs no eventfd writes.
class EventQueue {
 public:
  void push(EndpointEvent event) {
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty() && fd_used_) readable_.signal();
      queue_.push_back(std::move(event));
    }
    // All: a consumer's threads may take turns (the node's runtime and dispatch threads),
    // and the one woken must not be one that will not take the event.
    ready_.notify_all();
  }
  std::optional<EndpointEvent> pop() {
    std::lock_guard lock(mutex_);
    return pop_locked();
  }
  int native_handle() noexcept {
    std::lock_guard lock(mutex_);
    if (!fd_used_ && !queue_.empty()) readable_.signal();
    fd_used_ = true;
    return readable_.native_handle();
  }
  bool wait_nonempty(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return ready_.wait_for(lock, timeout, [&] { return !queue_.empty(); });
  }
  bool nonempty() {
    std::lock_guard lock(mutex_);
    return !queue_.empty();
  }

 private:
  std::optional<EndpointEvent> pop_locked() {
    if (queue_.empty()) return std::nullopt;
    EndpointEvent event = std::move(queue_.front());
    queue_.pop_front();
    if (queue_.empty() && fd_used_) readable_.clear();
    return event;
  }
  std::mutex mutex_;
  bool fd_used_ = false;
  std::condition_variable ready_;
  std::deque<EndpointEvent> queue_;
  EventFd readable_;
};

// A connected plain-TCP connection's socket as the sending threads see it. While the loop
// has nothing queued for the connection (`idle`), a sender writes its frame itself, under
// the lane's lock: no hand-off to the loop (an eventfd write, a wake-up, an epoll turn) on
// the way out. The loop takes the lane (idle = false, under the lock) before it queues or
// writes anything, and gives it back at the end of a turn in which it has written all.
struct Lane {
  std::mutex mutex;
  int fd = -1;
  bool open = true;   // false once the connection is dropped (its socket closes after)
  bool idle = false;  // the loop has nothing queued for the connection
  // What the socket did not take of a sender's frame: the loop queues it before
  // anything else of its own (take_lane), a tick included.
  std::vector<std::uint8_t> rest;
  std::atomic<Clock::rep> last_write{0};  // a sender's last write: a tick is not needed
};

struct Command {
  enum class Kind : std::uint8_t { send, connect, disconnect, resolved, send_rest };
  Kind kind;
  std::string peer;
  std::vector<std::uint8_t> body;  // send: a frame's body
  Resolver::Answer resolved;       // Kind::resolved
  std::shared_ptr<Lane> lane;      // Kind::send_rest: the lane whose rest waits
};

struct Connection {
  enum class Phase : std::uint8_t { epmd_lookup, connecting, handshaking, connected };

  std::uint64_t key = 0;
  bool outgoing = false;
  Phase phase = Phase::handshaking;
  Socket socket;
  std::optional<TlsStream> tls;  // with TLS distribution, on the peer's socket (after it: goes first)
  std::shared_ptr<Lane> lane;    // connected over plain TCP: senders may write themselves
  bool connect_pending = false;  // writable means the TCP connect finished
  std::string peer;              // outgoing: the node called; incoming: once its name is read
  std::string address;           // outgoing: the peer's host, where its EPMD and it are called
  bool owner = false;            // holds its peer's name (Impl::peers)
  bool arbitrated = false;       // incoming, answered nok: the peer's other call stays
  bool replaces = false;         // incoming, answered `alive`: replaces the connection up now
  std::optional<Handshake> handshake;
  FrameReader reader;
  std::vector<std::uint8_t> out;
  std::size_t out_begin = 0;
  std::vector<std::uint8_t> epmd_reply;
  Clock::time_point deadline;  // of the setup, until connected
  Clock::time_point last_read;
  Clock::time_point last_write;
  std::uint32_t interest = 0;  // the events registered with epoll

  explicit Connection(std::size_t max_frame) : reader(max_frame) {}
  std::size_t queued() const noexcept { return out.size() - out_begin; }
  Clock::time_point wrote_last() const noexcept {
    if (!lane) return last_write;
    return std::max(last_write, Clock::time_point(Clock::duration(lane->last_write.load(std::memory_order_relaxed))));
  }
  // Dist bytes may go out: the TCP connect is done and, with TLS, its handshake too.
  bool can_write() const noexcept { return !connect_pending && (!tls || tls->handshake_done()); }
};

// Who holds a peer's name: at most one connection per peer, as in net_kernel's table.
struct Peer {
  std::uint64_t owner = 0;  // 0: none (waiting for the peer to call us after its `nok`)
  std::vector<std::vector<std::uint8_t>> waiting;  // frames sent before the connection is up
  std::size_t waiting_bytes = 0;
  std::optional<Clock::time_point> awaiting_until;
  // Our call waits for the peer's host to resolve (Resolver), until then at most.
  std::optional<Clock::time_point> resolving_until;
  std::uint64_t resolution = 0;  // that lookup's id
};

// What is left until `deadline`, rounded up to what epoll and the waits count in; 0 once past.
std::chrono::milliseconds time_left(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(0), std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()));
}

std::string alive_part(std::string_view node) { return std::string(node.substr(0, node.find('@'))); }
std::string host_part(std::string_view node) { return std::string(node.substr(node.find('@') + 1)); }

}  // namespace

struct Endpoint::Impl {
  Impl(EndpointOptions options_in, std::optional<Registration> registration_in);

  // --- any thread ---
  void post(Command command);
  // Endpoint::send: the frame written on its peer's lane, or posted to the loop.
  // `owned`, if given, holds `body`'s bytes and may be moved from.
  void send_any(std::string_view peer, std::span<const std::uint8_t> body, std::vector<std::uint8_t>* owned);
  // The peer's lane; without one, `without_lane()` runs under the lanes' lock (so that a lane
  // made meanwhile sees what it did) and the answer is null.
  template <class WithoutLane>
  std::shared_ptr<Lane> lane_of(std::string_view peer, WithoutLane&& without_lane);
  // Writes a frame on an idle lane (its lock held): false when nothing could be written.
  bool write_on(Lane& lane, const std::shared_ptr<Lane>& owner, std::string_view peer,
                std::span<const std::uint8_t> body);
  void check_peer_name(std::string_view peer) const;

  // --- who runs the loop ---
  // The loop (`epoll`, `resolving` and every member below "Owned by the loop") is run by one
  // thread at a time: the network thread, or a consumer in wait_for_events while the network
  // thread lets it. The thread that will handle a frame then reads it itself: no hand-off
  // between threads (a wake-up of the consumer, some 13 us under gVisor) on the way in.
  enum class Driver : std::uint8_t { none, network, consumer };
  enum class Claim : std::uint8_t { driving, another_consumer_drives, network_drives };
  bool wait_for_events(std::chrono::milliseconds timeout);
  Claim claim_loop(Clock::time_point deadline);
  // A consumer's turns, until an event is queued or the deadline.
  void drive_until(Clock::time_point deadline);
  void report_failure(std::exception_ptr failure) noexcept;
  // The network thread: runs the loop unless a consumer does. It takes the loop back when
  // no consumer has run it for one to two takeover_delays (a long OCaml call must not stop
  // ticks), and at once when a consumer left work waiting in it or a command is posted
  // while nobody runs it.
  void run() noexcept;
  // Under drive_mutex.
  void set_driver(Driver next);
  // After a command is posted: if nobody runs the loop, the network thread takes it now.
  void attend_to_posted();
  // One turn: waits at most `max_wait` (less for a timer due sooner), then handles what
  // became ready, the commands and the timers.
  void turn(std::chrono::milliseconds max_wait);
  std::chrono::milliseconds time_to_next_deadline() const;
  void run_commands();
  void check_timers();
  void accept_all();
  void on_ready(std::uint64_t key, std::uint32_t events);
  // Runs `step` for a connection; its DistError (or any exception) drops just that connection.
  template <class Step>
  void guarded(std::uint64_t key, Step&& step);
  void read_from(Connection& c);
  std::optional<std::size_t> read_some(Connection& c);
  std::size_t write_some(Connection& c);
  void on_tcp_connected(Connection& c);
  void on_epmd_reply(Connection& c);
  void feed_handshake(Connection& c, std::span<const std::uint8_t> bytes);
  Status decide(std::uint64_t key, const PeerInfo& info);
  void become_connected(Connection& c);
  void deliver_frames(Connection& c);
  void append_frame(Connection& c, std::span<const std::uint8_t> body);
  void take_lane(Connection& c);
  void release_lanes();
  void flush(Connection& c);
  void update_interest(Connection& c);
  void start_outgoing(const std::string& peer);
  void call_epmd(const std::string& peer, const std::string& address, Clock::time_point deadline);
  void on_resolved(const Resolver::Answer& answer);
  void send_now(const std::string& peer, std::vector<std::uint8_t> body);
  void drop(std::uint64_t key, const Error& error);
  void fail_peer(const std::string& peer, const Error& error);
  Connection* find(std::uint64_t key) noexcept;
  std::uint64_t add_connection(std::unique_ptr<Connection> c);
  HandshakeConfig handshake_config() const;
  std::chrono::milliseconds tick_interval() const noexcept { return options.net_ticktime / 4; }

  EndpointOptions options;
  Listener listener;
  std::optional<Registration> registration;
  std::uint32_t creation = 0;
  Epoll epoll;
  EventFd wake;
  EventQueue events;
  std::mutex commands_mutex;
  std::vector<Command> commands;
  // Its answers come back as commands; destroyed before `commands` and `wake` (declared after).
  Resolver resolver{[this](Resolver::Answer answer) {
    post(Command{Command::Kind::resolved, {}, {}, std::move(answer), {}});
  }};
  std::unordered_map<std::uint64_t, std::string> resolving;  // lookup id -> peer
  std::uint64_t next_resolution = 1;
  std::atomic<bool> stopping{false};

  // Who runs the loop, under drive_mutex. The network thread looks every takeover_delay,
  // and every park_delay while a consumer waits idle in the loop (which wakes it when it
  // leaves). A consumer that leaves the loop after a short wait wakes nobody: on the fast
  // path, reading costs it no system call besides the reads.
  static constexpr std::chrono::milliseconds takeover_delay{2};
  static constexpr std::chrono::milliseconds park_delay{50};
  std::mutex drive_mutex;
  std::condition_variable network_looks;   // the network thread waits between looks
  std::condition_variable handed_over;     // a consumer waits for the network thread to let go
  Driver driver = Driver::network;
  bool broken = false;                     // the loop failed: nobody runs it any more
  bool urgent = false;                     // work waits in the loop and nobody runs it
  bool network_parked = false;             // the network thread waits park_delay
  int consumers_waiting = 0;               // for the network thread to let go
  std::uint64_t consumer_sessions = 0;     // times a consumer began running the loop
  std::atomic<bool> let_go{false};         // the network thread ends its turns: a consumer waits
  std::atomic<bool> unattended{false};     // driver == none, read without the lock by post()

  std::mutex lanes_mutex;
  std::unordered_map<std::string, std::shared_ptr<Lane>> lanes;  // by peer
  mutable std::mutex connected_mutex;
  std::set<std::string> connected;
  struct AtomicStats {
    std::atomic<std::uint64_t> ticks_sent{0}, ticks_received{0}, frames_received{0}, frames_sent{0}, accepted{0},
        handshakes_failed{0};
  } stats;

  // Owned by the loop (whoever runs it: Driver).
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
  std::unordered_map<std::string, Peer> peers;
  std::uint64_t next_key = first_connection_key;
  std::vector<std::uint8_t> read_buffer = std::vector<std::uint8_t>(read_chunk);
  std::optional<Clock::time_point> listener_paused_until;
  // TLS connections whose decrypted bytes OpenSSL holds after a turn's reads: epoll will not
  // signal them again, so the loop comes back to them without waiting.
  std::vector<std::uint64_t> tls_buffered;
  std::vector<std::uint64_t> lanes_taken;  // connections whose lane the loop holds

  std::thread thread;  // last: started once everything above exists
};

Endpoint::Impl::Impl(EndpointOptions options_in, std::optional<Registration> registration_in)
    : options(std::move(options_in)),
      listener(Listener::bind(options.listen_address, options.listen_port)),
      registration(std::move(registration_in)) {
  if (!valid_node_name(options.node_name)) throw DistError(Errc::bad_name, "own name '" + options.node_name + "'");
  if (options.net_ticktime < std::chrono::milliseconds(4)) {
    throw DistError(Errc::bad_state, "net_ticktime of " + std::to_string(options.net_ticktime.count()) + " ms");
  }
  if (registration && options.listen_port == 0) {
    throw DistError(Errc::bad_state, "a registration given with no listen_port: EPMD would point at another port");
  }
  if (!registration && options.register_in_epmd) {
    const bool hidden = (options.flags & flag::published) == 0;
    registration = EpmdClient(options.epmd)
                       .register_node(alive_part(options.node_name), listener.port(),
                                      hidden ? NodeType::hidden : NodeType::normal);
  }
  creation = registration ? registration->creation() : options.creation;
  epoll.add(wake.native_handle(), EPOLLIN, key_wake);
  epoll.add(listener.native_handle(), EPOLLIN, key_listener);
}

void Endpoint::Impl::check_peer_name(std::string_view peer) const {
  if (!valid_node_name(peer)) throw DistError(Errc::bad_name, "'" + std::string(peer) + "'");
  if (peer == options.node_name) throw DistError(Errc::bad_name, "a connection to ourselves");
}

// Frames keep their order: a sender writes only while the loop holds nothing for
// the peer (queued, or among the commands). Posting is done under the lanes' lock when the
// peer has no lane (a lane made meanwhile is not released while that frame waits), and under
// the peer's lane's lock otherwise (the lane is not released before the frame has gone).
void Endpoint::Impl::send_any(std::string_view peer, std::span<const std::uint8_t> body,
                              std::vector<std::uint8_t>* owned) {
  // The frame's bytes for the loop: moved when the caller gave them up, else copied.
  const auto posted = [&] {
    std::vector<std::uint8_t> bytes =
        owned != nullptr ? std::move(*owned) : std::vector<std::uint8_t>(body.begin(), body.end());
    post(Command{Command::Kind::send, std::string(peer), std::move(bytes), {}, {}});
  };
  for (;;) {
    const std::shared_ptr<Lane> lane = lane_of(peer, posted);
    if (!lane) return;
    const std::lock_guard lock(lane->mutex);
    // Closed: dropped after we found it, and out of the map already; the peer's next lane,
    // if it has one, is the one to post under.
    if (!lane->open) continue;
    if (lane->idle && write_on(*lane, lane, peer, body)) return;
    return posted();
  }
}

template <class WithoutLane>
std::shared_ptr<Lane> Endpoint::Impl::lane_of(std::string_view peer, WithoutLane&& without_lane) {
  const std::lock_guard lock(lanes_mutex);
  const auto it = lanes.find(std::string(peer));
  if (it != lanes.end()) return it->second;
  without_lane();
  return nullptr;
}

bool Endpoint::Impl::write_on(Lane& lane, const std::shared_ptr<Lane>& owner, std::string_view peer,
                              std::span<const std::uint8_t> body) {
  if (body.empty() || body.size() > std::numeric_limits<std::uint32_t>::max()) return false;
  std::array<std::uint8_t, 4> length = frame_length(body.size());
  std::array<iovec, 2> parts{iovec{length.data(), 4}, iovec{const_cast<std::uint8_t*>(body.data()), body.size()}};
  msghdr message{};
  message.msg_iov = parts.data();
  message.msg_iovlen = parts.size();
  ssize_t sent = 0;
  do {
    sent = ::sendmsg(lane.fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  // Nothing went: the loop queues the frame (and, on an error, sees it too).
  if (sent <= 0) return false;
  lane.last_write.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  stats.frames_sent.fetch_add(1, std::memory_order_relaxed);
  const auto written = static_cast<std::size_t>(sent);
  if (written == 4 + body.size()) return true;
  // Part of the frame went: the rest goes next, from the loop, before any other
  // bytes of its own (take_lane), which the command wakes it for.
  lane.idle = false;
  if (written < 4) lane.rest.assign(length.begin() + static_cast<std::ptrdiff_t>(written), length.end());
  const std::size_t from = written < 4 ? 0 : written - 4;
  lane.rest.insert(lane.rest.end(), body.begin() + static_cast<std::ptrdiff_t>(from), body.end());
  post(Command{Command::Kind::send_rest, std::string(peer), {}, {}, owner});
  return true;
}

void Endpoint::Impl::post(Command command) {
  {
    std::lock_guard lock(commands_mutex);
    commands.push_back(std::move(command));
  }
  wake.signal();
  attend_to_posted();
}

void Endpoint::Impl::report_failure(std::exception_ptr failure) noexcept {
  Error error{Errc::socket_error, "unknown exception"};
  try {
    std::rethrow_exception(failure);
  } catch (const DistError& e) {
    error = e.error();
  } catch (const std::exception& e) {
    error.detail = e.what();
  } catch (...) {
  }
  try {
    events.push(make_event(EndpointEvent::Kind::failed, {}, std::move(error)));
  } catch (...) {
  }
}

void Endpoint::Impl::run() noexcept {
  // OpenSSL writes with write(2), which raises SIGPIPE on a socket the peer has closed. Blocked
  // in this thread, which does all the TLS writes (consumers never run the loop with TLS), it
  // only stays pending: the write fails with EPIPE and that connection goes as closed,
  // instead of the process.
  sigset_t broken_pipe;
  sigemptyset(&broken_pipe);
  sigaddset(&broken_pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &broken_pipe, nullptr);
  std::unique_lock lock(drive_mutex);
  // What the last look saw: without work left waiting (`urgent`), the loop is taken back
  // only when two looks in a row found nobody in it and no consumer came and went between.
  std::uint64_t sessions_seen = consumer_sessions;
  Driver driver_seen = Driver::consumer;
  while (!stopping.load(std::memory_order_acquire) && !broken) {
    if (driver == Driver::network) {
      lock.unlock();
      std::exception_ptr failure;
      try {
        while (!stopping.load(std::memory_order_acquire) && !let_go.load(std::memory_order_acquire)) {
          turn(std::chrono::seconds(60));
        }
      } catch (...) {
        failure = std::current_exception();
      }
      if (failure) report_failure(failure);
      lock.lock();
      let_go.store(false, std::memory_order_relaxed);
      // The consumer that asked has stopped waiting (its timeout): the loop stays here.
      if (!failure && consumers_waiting == 0) continue;
      set_driver(Driver::none);
      broken = broken || failure != nullptr;
      handed_over.notify_all();
      sessions_seen = consumer_sessions;
      driver_seen = Driver::consumer;  // as if a consumer had just been in the loop
      continue;
    }
    if (driver == Driver::none && consumers_waiting == 0) {
      const bool away = consumer_sessions == sessions_seen && driver_seen == Driver::none;
      if (urgent || away) {  // away: nobody read for a whole takeover_delay (a long OCaml call)
        set_driver(Driver::network);
        continue;
      }
    }
    const bool idle_consumer =
        consumer_sessions == sessions_seen && driver == Driver::consumer && driver_seen == Driver::consumer;
    sessions_seen = consumer_sessions;
    driver_seen = driver;
    network_parked = idle_consumer;
    network_looks.wait_for(lock, idle_consumer ? park_delay : takeover_delay);
    network_parked = false;
  }
}

void Endpoint::Impl::set_driver(Driver next) {
  driver = next;
  urgent = urgent && next == Driver::none;
  unattended.store(next == Driver::none);
}

void Endpoint::Impl::attend_to_posted() {
  if (!unattended.load()) return;
  {
    const std::lock_guard lock(drive_mutex);
    if (driver != Driver::none) return;
    urgent = true;
  }
  network_looks.notify_one();
}

bool Endpoint::Impl::wait_for_events(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (events.nonempty()) return true;
    if (Clock::now() >= deadline) return false;
    switch (claim_loop(deadline)) {
      case Claim::driving: drive_until(deadline); break;
      case Claim::network_drives: return events.wait_nonempty(time_left(deadline));
      // Rare (the node's two threads, as one hands over to the other): the other one's
      // events wake us, and the loop is looked at again soon in case it left it.
      case Claim::another_consumer_drives:
        events.wait_nonempty(std::min(time_left(deadline), std::chrono::milliseconds(1)));
        break;
    }
  }
}

Endpoint::Impl::Claim Endpoint::Impl::claim_loop(Clock::time_point deadline) {
  std::unique_lock lock(drive_mutex);
  const auto stopped = [&] { return broken || stopping.load(std::memory_order_acquire); };
  if (!options.consumer_reads || options.tls || stopped()) return Claim::network_drives;
  if (driver == Driver::network) {
    ++consumers_waiting;
    let_go.store(true, std::memory_order_release);
    wake.signal();
    handed_over.wait_until(lock, deadline, [&] { return driver != Driver::network || stopped(); });
    --consumers_waiting;
    if (driver == Driver::network || stopped()) return Claim::network_drives;
  }
  if (driver == Driver::consumer) return Claim::another_consumer_drives;
  set_driver(Driver::consumer);
  ++consumer_sessions;
  return Claim::driving;
}

void Endpoint::Impl::drive_until(Clock::time_point deadline) {
  std::exception_ptr failure;
  try {
    // One turn at least (one that does not wait, if an event came during the claim or the
    // deadline has passed): the loop was taken from the network thread, which may have left
    // something ready.
    do {
      turn(events.nonempty() ? std::chrono::milliseconds(0) : time_left(deadline));
    } while (!events.nonempty() && !stopping.load(std::memory_order_acquire) && Clock::now() < deadline);
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) report_failure(failure);
  bool wake_network = false;
  {
    const std::lock_guard lock(drive_mutex);
    // Unattended first, then the look at the commands: a command posted after that look
    // finds the loop unattended (attend_to_posted), one posted before it is seen here.
    set_driver(Driver::none);
    broken = broken || failure != nullptr;
    const bool commands_wait = [&] {
      const std::lock_guard commands_lock(commands_mutex);
      return !commands.empty();
    }();
    // Bytes the socket did not take yet (a kept lane), or commands: the network thread
    // takes the loop at once rather than after its looks.
    urgent = !lanes_taken.empty() || commands_wait;
    wake_network = urgent || network_parked;
  }
  if (wake_network) network_looks.notify_one();
}

void Endpoint::Impl::turn(std::chrono::milliseconds max_wait) {
  std::array<epoll_event, 64> ready{};
  const auto timeout = tls_buffered.empty() ? std::min(max_wait, time_to_next_deadline()) : std::chrono::milliseconds(0);
  for (const epoll_event& e : epoll.wait(ready, timeout)) {
    if (e.data.u64 == key_wake) {
      wake.clear();
    } else if (e.data.u64 == key_listener) {
      accept_all();
    } else {
      on_ready(e.data.u64, e.events);
    }
  }
  for (const std::uint64_t key : std::exchange(tls_buffered, {})) on_ready(key, EPOLLIN);
  run_commands();
  check_timers();
  release_lanes();
}

std::chrono::milliseconds Endpoint::Impl::time_to_next_deadline() const {
  const auto now = Clock::now();
  auto next = now + std::chrono::seconds(60);
  for (const auto& [key, c] : connections) {
    if (c->phase != Connection::Phase::connected) {
      next = std::min(next, c->deadline);
      continue;
    }
    next = std::min(next, c->last_read + options.net_ticktime);
    if (c->queued() == 0) next = std::min(next, c->wrote_last() + tick_interval());
  }
  for (const auto& [name, p] : peers) {
    if (p.owner != 0) continue;  // its connection's deadlines count
    if (p.awaiting_until) next = std::min(next, *p.awaiting_until);
    if (p.resolving_until) next = std::min(next, *p.resolving_until);
  }
  if (listener_paused_until) next = std::min(next, *listener_paused_until);
  if (next <= now) return std::chrono::milliseconds(0);
  // Rounded up: waking a little early would only spin until the deadline.
  return std::chrono::duration_cast<std::chrono::milliseconds>(next - now) + std::chrono::milliseconds(1);
}

Connection* Endpoint::Impl::find(std::uint64_t key) noexcept {
  const auto it = connections.find(key);
  return it == connections.end() ? nullptr : it->second.get();
}

template <class Step>
void Endpoint::Impl::guarded(std::uint64_t key, Step&& step) {
  try {
    step();
  } catch (const DistError& e) {
    drop(key, e.error());
  } catch (const std::exception& e) {
    drop(key, Error{Errc::socket_error, e.what()});
  }
}

std::uint64_t Endpoint::Impl::add_connection(std::unique_ptr<Connection> c) {
  const std::uint64_t key = next_key++;
  c->key = key;
  c->interest = base_interest | (c->connect_pending ? std::uint32_t{EPOLLOUT} : 0);
  epoll.add(c->socket.native_handle(), c->interest, key);
  connections.emplace(key, std::move(c));
  return key;
}

HandshakeConfig Endpoint::Impl::handshake_config() const {
  HandshakeConfig config;
  config.node_name = options.node_name;
  config.cookie = options.cookie;
  config.flags = options.flags;
  config.creation = creation;
  config.challenge = random_challenge();
  if (options.tls) config.length_bytes = 4;
  return config;
}

// --- incoming --------------------------------------------------------------------------

void Endpoint::Impl::accept_all() {
  for (int i = 0; i < accepts_per_wakeup; ++i) {
    std::optional<Socket> socket;
    try {
      socket = listener.try_accept();
    } catch (const DistError&) {
      // Out of descriptors, say: the connection waits in the backlog for a later turn.
      epoll.remove(listener.native_handle());
      listener_paused_until = Clock::now() + accept_pause;
      return;
    }
    if (!socket) return;
    stats.accepted.fetch_add(1, std::memory_order_relaxed);
    auto c = std::make_unique<Connection>(options.max_frame);
    c->socket = std::move(*socket);
    if (options.tls) {
      try {
        c->tls.emplace(*options.tls, TlsStream::Role::server, c->socket.native_handle(), std::string_view{});
      } catch (const DistError&) {
        continue;  // OpenSSL out of memory: the caller sees the close
      }
    }
    c->phase = Connection::Phase::handshaking;
    c->deadline = Clock::now() + options.setup_timeout;
    std::uint64_t key = 0;
    try {
      key = add_connection(std::move(c));
    } catch (const DistError&) {
      continue;  // epoll could not take it (no memory): the caller sees the close
    }
    guarded(key, [&] {  // the random challenge may fail
      HandshakeConfig config = handshake_config();
      config.decide = [this, key](const PeerInfo& info) { return decide(key, info); };
      find(key)->handshake.emplace(Handshake::acceptor(std::move(config)));
    });
  }
}

// net_kernel's accept_pending: a name not in use is taken; against our own attempt under
// way the greater node name wins (we say nok when ours is greater, else we give our attempt
// up and answer ok_simultaneous); against a connection up we answer alive, and a peer that
// answers true replaces it (it restarted).
Status Endpoint::Impl::decide(std::uint64_t key, const PeerInfo& info) {
  Connection* c = find(key);
  if (c == nullptr || info.name == options.node_name) return Status::not_allowed;
  c->peer = info.name;
  Peer& p = peers[info.name];
  Connection* other = p.owner != 0 ? find(p.owner) : nullptr;
  if (other == nullptr) {
    p.owner = key;
    p.resolving_until.reset();  // our own call, waiting for the peer's host, is not needed
    c->owner = true;
    return Status::ok;
  }
  if (other->phase == Connection::Phase::connected) {
    c->replaces = true;
    return Status::alive;
  }
  if (!other->outgoing || options.node_name > info.name) {
    // The peer calls us twice (the first call stays), or its call and ours cross and ours
    // wins: neither is a refusal worth reporting.
    c->arbitrated = true;
    return Status::nok;
  }
  other->owner = false;
  p.owner = key;
  c->owner = true;
  drop(other->key, Error{Errc::refused_nok, "simultaneous connect: " + info.name + "'s call wins"});
  return Status::ok_simultaneous;
}

// --- outgoing --------------------------------------------------------------------------

// As OTP's inet_tcp_dist: the host part of the peer's name is resolved, and its EPMD asked
// there for the peer's port. A name that is not an IPv4 literal is resolved off this thread;
// frames sent meanwhile wait as for any connection not yet up. All of it, resolving
// included, within the setup time. A peer on this host (its host part ours, or an address
// on loopback) is looked up in our own EPMD and called on loopback: an EPMD started for us
// listens on 127.0.0.1 only, whatever the machine's name resolves to (127.0.1.1 on many).
void Endpoint::Impl::start_outgoing(const std::string& peer) {
  const auto deadline = Clock::now() + options.setup_timeout;
  if (options.peer_address) return call_epmd(peer, *options.peer_address, deadline);
  const std::string host = host_part(peer);
  if (host == host_part(options.node_name)) return call_epmd(peer, options.epmd.address, deadline);
  if (const std::optional<std::string> literal = ipv4_literal(host)) return call_epmd(peer, *literal, deadline);
  Peer& p = peers[peer];
  p.resolution = next_resolution++;
  p.resolving_until = deadline;
  resolving.emplace(p.resolution, peer);
  try {
    resolver.lookup(p.resolution, host, deadline);
  } catch (const std::exception& e) {  // no thread to resolve with (out of memory, of threads)
    resolving.erase(p.resolution);
    fail_peer(peer, Error{Errc::unknown_host, host + " (" + e.what() + ")"});
  }
}

void Endpoint::Impl::on_resolved(const Resolver::Answer& answer) {
  const auto lookup = resolving.find(answer.id);
  if (lookup == resolving.end()) return;
  const std::string peer = std::move(lookup->second);
  resolving.erase(lookup);
  const auto it = peers.find(peer);
  // Gone (failed at its deadline, disconnected), or it called us meanwhile: its connection
  // stands, ours is not needed.
  if (it == peers.end() || it->second.resolution != answer.id || !it->second.resolving_until) return;
  const Clock::time_point deadline = *it->second.resolving_until;
  it->second.resolving_until.reset();
  if (it->second.owner != 0) return;
  if (!answer.address) {
    return fail_peer(peer, Error{Errc::unknown_host, answer.host + " (" + answer.failure + ")"});
  }
  call_epmd(peer, *answer.address, deadline);
}

void Endpoint::Impl::call_epmd(const std::string& peer, const std::string& address, Clock::time_point deadline) {
  auto c = std::make_unique<Connection>(options.max_frame);
  c->outgoing = true;
  c->owner = true;
  c->peer = peer;
  // With peer_address given, every peer is on the one host our EPMD serves (and is called
  // there); a peer on loopback is on ours, called where our EPMD is.
  const bool ours = options.peer_address || address.starts_with("127.");
  const std::string& epmd_address = ours ? options.epmd.address : address;
  c->address = options.peer_address ? *options.peer_address : epmd_address;
  c->phase = Connection::Phase::epmd_lookup;
  c->deadline = deadline;
  try {
    c->socket = Socket::start_connect(epmd_address, options.epmd.port);
    c->connect_pending = true;
    c->out = port_please2_request(alive_part(peer));
    peers[peer].owner = add_connection(std::move(c));
  } catch (const DistError& e) {
    fail_peer(peer, Error{e.code() == Errc::connect_failed ? Errc::epmd_unreachable : e.code(), e.error().message()});
  }
}

void Endpoint::Impl::on_tcp_connected(Connection& c) {
  if (c.phase != Connection::Phase::connecting) return;  // EPMD: the request is already queued
  if (options.tls) {
    const std::string_view host = std::string_view(c.peer).substr(c.peer.find('@') + 1);
    c.tls.emplace(*options.tls, TlsStream::Role::client, c.socket.native_handle(), host);
  }
  HandshakeConfig config = handshake_config();
  config.peer_name = c.peer;
  c.handshake.emplace(Handshake::initiator(std::move(config)));
  c.phase = Connection::Phase::handshaking;
  const auto first = c.handshake->take_output();
  c.out.insert(c.out.end(), first.begin(), first.end());
  if (c.handshake->state() == Handshake::State::failed) throw DistError(*c.handshake->error());
}

void Endpoint::Impl::on_epmd_reply(Connection& c) {
  const auto info = parse_port2_reply(c.epmd_reply);
  if (!info) throw DistError(Errc::connect_failed, "EPMD knows no node '" + alive_part(c.peer) + "'");
  epoll.remove(c.socket.native_handle());
  c.socket = Socket::start_connect(c.address, info->port);
  c.connect_pending = true;
  c.phase = Connection::Phase::connecting;
  c.epmd_reply.clear();
  c.out.clear();
  c.out_begin = 0;
  c.interest = base_interest | EPOLLOUT;
  epoll.add(c.socket.native_handle(), c.interest, c.key);
}

// --- both ------------------------------------------------------------------------------

void Endpoint::Impl::on_ready(std::uint64_t key, std::uint32_t ready) {
  Connection* c = find(key);
  if (c == nullptr) return;
  guarded(key, [&] {
    if (c->connect_pending) {
      if ((ready & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
      c->connect_pending = false;
      c->socket.finish_connect();
      on_tcp_connected(*c);
    }
    if (c->tls && !c->connect_pending && !c->tls->handshake_done()) {
      if (!c->tls->handshake()) return update_interest(*c);
      // Done: OpenSSL may hold the peer's first dist bytes already, so read without waiting.
      read_from(*c);
    } else if (c->tls || (ready & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
      // TLS reads on any readiness: a record may be complete only after a write turn.
      read_from(*c);
    }
    flush(*c);
  });
}

void Endpoint::Impl::read_from(Connection& c) {
  for (int i = 0; i < reads_per_wakeup; ++i) {
    const auto n = read_some(c);
    if (!n) return;
    if (*n == 0) {
      if (c.phase == Connection::Phase::epmd_lookup) return on_epmd_reply(c);  // EPMD closes after its reply
      if (c.handshake) c.handshake->peer_closed();
      throw DistError(Errc::connection_closed, c.peer.empty() ? "during the handshake" : c.peer);
    }
    const std::span<const std::uint8_t> bytes(read_buffer.data(), *n);
    c.last_read = Clock::now();
    switch (c.phase) {
      case Connection::Phase::epmd_lookup:
        if (c.epmd_reply.size() + bytes.size() > max_port_reply) throw DistError(Errc::epmd_bad_reply, "reply too long");
        c.epmd_reply.insert(c.epmd_reply.end(), bytes.begin(), bytes.end());
        break;
      case Connection::Phase::connecting: break;  // nothing is read before the connect completes
      case Connection::Phase::handshaking: feed_handshake(c, bytes); break;
      case Connection::Phase::connected:
        c.reader.feed(bytes);
        deliver_frames(c);
        break;
    }
    // A short read emptied the socket, most likely: epoll (level-triggered) says if more
    // came, which spares every call a read that fails with EAGAIN. OpenSSL may hold more
    // than the socket did, so TLS reads on until it has none.
    if (!c.tls && *n < read_buffer.size()) return;
  }
  // The turn is over with bytes decrypted and unread: the socket will not say so again.
  if (c.tls && c.tls->has_buffered()) tls_buffered.push_back(c.key);
}

std::optional<std::size_t> Endpoint::Impl::read_some(Connection& c) {
  return c.tls ? c.tls->try_read(read_buffer) : c.socket.try_read(read_buffer);
}

std::size_t Endpoint::Impl::write_some(Connection& c) {
  const auto rest = std::span(c.out).subspan(c.out_begin);
  return c.tls ? c.tls->try_write(rest) : c.socket.try_write(rest);
}

void Endpoint::Impl::feed_handshake(Connection& c, std::span<const std::uint8_t> bytes) {
  Handshake& hs = *c.handshake;
  hs.feed(bytes);
  const auto out = hs.take_output();
  c.out.insert(c.out.end(), out.begin(), out.end());
  if (hs.state() == Handshake::State::failed) {
    // A refusal (nok, not_allowed) is worth delivering before the close; best effort.
    try {
      flush(c);
    } catch (const DistError&) {
    }
    throw DistError(*hs.error());
  }
  if (hs.state() == Handshake::State::connected) become_connected(c);
}

void Endpoint::Impl::become_connected(Connection& c) {
  Handshake& hs = *c.handshake;
  const PeerInfo info = hs.peer();
  const std::uint64_t flags = hs.negotiated_flags();
  const auto leftover = hs.take_leftover();
  c.handshake.reset();
  c.peer = info.name;
  if (!c.owner) {
    const auto it = peers.find(c.peer);
    if (!c.replaces || it == peers.end() || it->second.owner == 0) {
      throw DistError(Errc::bad_state, "connection to " + c.peer + " lost its name while handshaking");
    }
    // The peer restarted and answered `alive` with true: its old connection goes.
    drop(it->second.owner, Error{Errc::replaced, c.peer});
    c.owner = true;
  }
  Peer& p = peers[c.peer];
  p.owner = c.key;
  p.awaiting_until.reset();
  c.phase = Connection::Phase::connected;
  c.last_read = c.last_write = Clock::now();
  if (!c.tls) {  // OpenSSL's stream is this thread's alone
    c.lane = std::make_shared<Lane>();
    c.lane->fd = c.socket.native_handle();
    lanes_taken.push_back(c.key);  // held until the frames that waited for it have gone
    const std::lock_guard lock(lanes_mutex);
    lanes[c.peer] = c.lane;
  }
  {
    std::lock_guard lock(connected_mutex);
    connected.insert(c.peer);
  }
  EndpointEvent up = make_event(EndpointEvent::Kind::connected, c.peer);
  up.flags = flags;
  up.creation = info.creation;
  events.push(std::move(up));
  auto waiting = std::exchange(p.waiting, {});
  p.waiting_bytes = 0;
  for (const auto& body : waiting) append_frame(c, body);
  c.reader.feed(leftover);
  deliver_frames(c);
}

void Endpoint::Impl::deliver_frames(Connection& c) {
  for (;;) {
    const auto event = c.reader.next();
    switch (event.kind) {
      case FrameReader::Event::Kind::need_more: return;
      case FrameReader::Event::Kind::tick: stats.ticks_received.fetch_add(1, std::memory_order_relaxed); break;
      case FrameReader::Event::Kind::data: {
        stats.frames_received.fetch_add(1, std::memory_order_relaxed);
        EndpointEvent e = make_event(EndpointEvent::Kind::frame, c.peer);
        e.body.assign(event.body.begin(), event.body.end());
        events.push(std::move(e));
        break;
      }
      case FrameReader::Event::Kind::error: throw DistError(event.error);
    }
  }
}

void Endpoint::Impl::take_lane(Connection& c) {
  if (!c.lane) return;
  {
    const std::lock_guard lock(c.lane->mutex);
    c.lane->idle = false;
    if (!c.lane->rest.empty()) {
      c.out.insert(c.out.end(), c.lane->rest.begin(), c.lane->rest.end());
      c.lane->rest.clear();
    }
  }
  if (std::find(lanes_taken.begin(), lanes_taken.end(), c.key) == lanes_taken.end()) lanes_taken.push_back(c.key);
}

// At the end of a turn: the lanes of connections with nothing left to write go back to the
// senders, unless a frame for the peer still waits among the commands (it must go first).
void Endpoint::Impl::release_lanes() {
  std::vector<std::uint64_t> kept;
  for (const std::uint64_t key : lanes_taken) {
    Connection* c = find(key);
    if (c == nullptr || !c->lane) continue;
    if (c->queued() > 0 || !c->can_write()) {
      kept.push_back(key);
      continue;
    }
    const std::lock_guard lock(c->lane->mutex);
    const std::lock_guard commands_lock(commands_mutex);
    const bool waiting = std::any_of(commands.begin(), commands.end(), [&](const Command& command) {
      return command.kind != Command::Kind::connect && command.kind != Command::Kind::resolved && command.peer == c->peer;
    });
    if (waiting || !c->lane->rest.empty()) {
      kept.push_back(key);
    } else {
      c->lane->idle = true;
    }
  }
  lanes_taken = std::move(kept);
}

void Endpoint::Impl::append_frame(Connection& c, std::span<const std::uint8_t> body) {
  take_lane(c);
  if (body.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw DistError(Errc::frame_too_long, std::to_string(body.size()) + " bytes to " + c.peer);
  }
  if (c.queued() + 4 + body.size() > options.max_queued_bytes) {
    throw DistError(Errc::send_queue_full, c.peer + ": " + std::to_string(c.queued()) + " bytes queued");
  }
  if (c.out_begin > 0 && c.out_begin >= c.out.size() / 2) {
    c.out.erase(c.out.begin(), c.out.begin() + static_cast<std::ptrdiff_t>(c.out_begin));
    c.out_begin = 0;
  }
  const auto length = frame_length(body.size());
  c.out.reserve(c.out.size() + 4 + body.size());
  c.out.insert(c.out.end(), length.begin(), length.end());
  c.out.insert(c.out.end(), body.begin(), body.end());
  if (body.empty()) {
    stats.ticks_sent.fetch_add(1, std::memory_order_relaxed);
  } else {
    stats.frames_sent.fetch_add(1, std::memory_order_relaxed);
  }
}

void Endpoint::Impl::flush(Connection& c) {
  while (c.can_write() && c.queued() > 0) {
    const std::size_t n = write_some(c);
    if (n == 0) break;
    c.out_begin += n;
    c.last_write = Clock::now();
  }
  if (c.queued() == 0) {
    c.out.clear();
    c.out_begin = 0;
  }
  update_interest(c);
}

void Endpoint::Impl::update_interest(Connection& c) {
  // While TLS handshakes, writable only matters when OpenSSL could not write: the queued dist
  // bytes wait for it, and asking for writable then would spin the loop.
  const bool tls_wants_write = c.tls && c.tls->wants_write();
  const bool out_wanted = c.connect_pending || tls_wants_write || (c.can_write() && c.queued() > 0);
  const std::uint32_t wanted = base_interest | (out_wanted ? std::uint32_t{EPOLLOUT} : 0);
  if (wanted == c.interest) return;
  epoll.modify(c.socket.native_handle(), wanted, c.key);
  c.interest = wanted;
}

void Endpoint::Impl::drop(std::uint64_t key, const Error& error) {
  const auto it = connections.find(key);
  if (it == connections.end()) return;
  const std::unique_ptr<Connection> c = std::move(it->second);
  connections.erase(it);
  if (c->lane) {  // no sender writes on the socket from now on: it closes below
    {
      const std::lock_guard lock(lanes_mutex);
      if (const auto lane = lanes.find(c->peer); lane != lanes.end() && lane->second == c->lane) lanes.erase(lane);
    }
    const std::lock_guard lock(c->lane->mutex);
    c->lane->open = false;
  }
  epoll.remove(c->socket.native_handle());
  const bool was_connected = c->phase == Connection::Phase::connected;
  if (!was_connected) stats.handshakes_failed.fetch_add(1, std::memory_order_relaxed);
  // A caller refused (a wrong cookie, bytes that are no handshake, a stall) is said, so that
  // the node can log it; nothing it sent was acted upon. One that only hung up is not: two
  // nodes that call each other at once hang up the call that loses.
  const bool hung_up =
      error.code == Errc::connection_closed || error.code == Errc::socket_error || error.code == Errc::closed_locally;
  if (!was_connected && !c->outgoing && !c->arbitrated && !hung_up) {
    events.push(make_event(EndpointEvent::Kind::refused, c->peer, error));
  }
  if (!c->owner) return;  // lost an arbitration, or never named a peer: nobody was told of it
  if (was_connected) {
    std::lock_guard lock(connected_mutex);
    connected.erase(c->peer);
  }
  const auto p = peers.find(c->peer);
  if (!was_connected && !c->outgoing && p != peers.end() && p->second.waiting.empty()) {
    peers.erase(p);  // a call that failed before anything was up or waiting: nobody to tell
    return;
  }
  if (!was_connected && c->outgoing && error.code == Errc::refused_nok && p != peers.end()) {
    // The peer is calling us at the same moment and wins: its frames wait for that call.
    p->second.owner = 0;
    p->second.awaiting_until = Clock::now() + options.setup_timeout;
    return;
  }
  fail_peer(c->peer, error);
}

void Endpoint::Impl::fail_peer(const std::string& peer, const Error& error) {
  peers.erase(peer);
  events.push(make_event(EndpointEvent::Kind::disconnected, peer, error));
}

void Endpoint::Impl::send_now(const std::string& peer, std::vector<std::uint8_t> body) {
  if (!peers.contains(peer)) start_outgoing(peer);
  const auto it = peers.find(peer);
  if (it == peers.end()) return;  // the attempt failed at once, and said so
  Peer& p = it->second;
  if (Connection* c = p.owner != 0 ? find(p.owner) : nullptr; c != nullptr && c->phase == Connection::Phase::connected) {
    guarded(c->key, [&] {
      append_frame(*c, body);
      flush(*c);
    });
    return;
  }
  if (p.waiting_bytes + 4 + body.size() > options.max_queued_bytes) {
    const Error full{Errc::send_queue_full, peer + ": " + std::to_string(p.waiting_bytes) + " bytes wait for the connection"};
    if (p.owner != 0 && find(p.owner) != nullptr) {
      drop(p.owner, full);
    } else {
      fail_peer(peer, full);
    }
    return;
  }
  p.waiting_bytes += 4 + body.size();
  p.waiting.push_back(std::move(body));
}

void Endpoint::Impl::run_commands() {
  std::vector<Command> batch;
  {
    std::lock_guard lock(commands_mutex);
    batch.swap(commands);
  }
  for (Command& command : batch) {
    switch (command.kind) {
      case Command::Kind::send: send_now(command.peer, std::move(command.body)); break;
      case Command::Kind::connect:
        if (!peers.contains(command.peer)) start_outgoing(command.peer);
        break;
      case Command::Kind::resolved: on_resolved(command.resolved); break;
      case Command::Kind::send_rest: {
        // Only on the connection the frame began on: a new one must not get half a frame.
        const auto it = peers.find(command.peer);
        Connection* c = it != peers.end() && it->second.owner != 0 ? find(it->second.owner) : nullptr;
        if (c == nullptr || c->lane != command.lane) break;
        guarded(c->key, [&] {
          take_lane(*c);  // queues the rest, if a tick or a frame has not already
          flush(*c);
        });
        break;
      }
      case Command::Kind::disconnect: {
        const auto it = peers.find(command.peer);
        if (it == peers.end()) break;
        const Error closed{Errc::closed_locally, command.peer};
        if (it->second.owner != 0 && find(it->second.owner) != nullptr) {
          drop(it->second.owner, closed);
        } else {
          fail_peer(command.peer, closed);
        }
        break;
      }
    }
  }
}

void Endpoint::Impl::check_timers() {
  const auto now = Clock::now();
  if (listener_paused_until && now >= *listener_paused_until) {
    listener_paused_until.reset();
    epoll.add(listener.native_handle(), EPOLLIN, key_listener);
  }
  std::vector<std::pair<std::uint64_t, Error>> doomed;
  std::vector<std::uint64_t> to_tick;
  for (const auto& [key, c] : connections) {
    if (c->phase != Connection::Phase::connected) {
      if (now >= c->deadline) {
        doomed.emplace_back(key, Error{Errc::timeout, "setup of " + (c->peer.empty() ? "an incoming connection" : c->peer)});
      }
    } else if (now - c->last_read > options.net_ticktime) {
      doomed.emplace_back(key, Error{Errc::peer_silent, c->peer});
    } else if (c->queued() == 0 && now - c->wrote_last() >= tick_interval()) {
      to_tick.push_back(key);
    }
  }
  for (const auto& [key, error] : doomed) drop(key, error);
  for (const std::uint64_t key : to_tick) {
    Connection* c = find(key);
    if (c == nullptr) continue;
    guarded(key, [&] {
      append_frame(*c, {});
      flush(*c);
      c->last_write = now;  // even if the socket took nothing: the tick is queued
    });
  }
  std::vector<std::string> gave_up;
  std::vector<std::string> unresolved;
  for (const auto& [name, p] : peers) {
    if (p.owner == 0 && p.awaiting_until && now >= *p.awaiting_until) gave_up.push_back(name);
    if (p.owner == 0 && p.resolving_until && now >= *p.resolving_until) unresolved.push_back(name);
  }
  for (const auto& name : gave_up) {
    fail_peer(name, Error{Errc::refused_nok, name + " answered nok and did not call us within the setup time"});
  }
  for (const auto& name : unresolved) {
    fail_peer(name, Error{Errc::timeout, "resolving the host of " + name});
  }
}

// --- Endpoint --------------------------------------------------------------------------

Endpoint::Endpoint(EndpointOptions options) : impl_(std::make_unique<Impl>(std::move(options), std::nullopt)) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

Endpoint::Endpoint(EndpointOptions options, Registration registration)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(registration))) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

Endpoint::~Endpoint() {
  {
    // Under the lock: the network thread, between its check of `stopping` and its wait,
    // cannot miss it. (No consumer may be in wait_event or wait_for_events now.)
    const std::lock_guard lock(impl_->drive_mutex);
    impl_->stopping.store(true, std::memory_order_release);
  }
  impl_->wake.signal();
  impl_->network_looks.notify_all();
  impl_->handed_over.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

const std::string& Endpoint::node_name() const noexcept { return impl_->options.node_name; }
std::uint16_t Endpoint::port() const noexcept { return impl_->listener.port(); }
std::uint32_t Endpoint::creation() const noexcept { return impl_->creation; }

void Endpoint::send(std::string_view peer, std::vector<std::uint8_t> body) {
  impl_->check_peer_name(peer);
  impl_->send_any(peer, body, &body);
}

void Endpoint::send(std::string_view peer, std::span<const std::uint8_t> body) {
  impl_->check_peer_name(peer);
  impl_->send_any(peer, body, nullptr);
}

void Endpoint::connect(std::string_view peer) {
  impl_->check_peer_name(peer);
  impl_->post(Command{Command::Kind::connect, std::string(peer), {}, {}, {}});
}

void Endpoint::disconnect(std::string_view peer) {
  impl_->check_peer_name(peer);
  // A frame sent after this must not go on the connection about to close: it waits for the
  // next one. The lane is taken, and the command posted, under its lock.
  if (const std::shared_ptr<Lane> lane = impl_->lane_of(peer, [] {})) {
    const std::lock_guard lock(lane->mutex);
    lane->idle = false;
    return impl_->post(Command{Command::Kind::disconnect, std::string(peer), {}, {}, {}});
  }
  impl_->post(Command{Command::Kind::disconnect, std::string(peer), {}, {}, {}});
}

std::optional<EndpointEvent> Endpoint::poll_event() { return impl_->events.pop(); }
std::optional<EndpointEvent> Endpoint::wait_event(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!impl_->wait_for_events(time_left(deadline))) return std::nullopt;
    // Another waiting thread may have taken the event first.
    if (std::optional<EndpointEvent> event = impl_->events.pop()) return event;
    if (Clock::now() >= deadline) return std::nullopt;
  }
}
bool Endpoint::wait_for_events(std::chrono::milliseconds timeout) { return impl_->wait_for_events(timeout); }

int Endpoint::event_fd() const noexcept { return impl_->events.native_handle(); }

std::vector<std::string> Endpoint::connected_peers() const {
  std::lock_guard lock(impl_->connected_mutex);
  return {impl_->connected.begin(), impl_->connected.end()};
}

Endpoint::Stats Endpoint::stats() const noexcept {
  const auto& s = impl_->stats;
  constexpr auto relaxed = std::memory_order_relaxed;
  return Stats{s.ticks_sent.load(relaxed),      s.ticks_received.load(relaxed), s.frames_received.load(relaxed),
               s.frames_sent.load(relaxed),     s.accepted.load(relaxed),       s.handshakes_failed.load(relaxed)};
}

}  // namespace camlbeam::dist
