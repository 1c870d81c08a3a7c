// The port workers end to end, native and bytecode: the real executables, spawned with
// their pipes on fds 3 and 4 as open_port(..., [nouse_stdio]) does, driven frame by frame
// with our ETF codec. cpp/port/README.md is the protocol under test. Every wait is bounded.
#include "frame_io.hpp"

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/etf/text.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace etf = camlbeam::etf;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

etf::Term term(std::string_view text) { return etf::parse_term(text); }

// A frame from the worker: the envelope and the payload, two terms back to back.
struct Frame {
  etf::Term envelope;
  etf::Term payload;
};

Frame split(std::span<const std::uint8_t> bytes) {
  etf::TermBuilder first;
  const etf::DecodeResult head = etf::decode(bytes, first, etf::DecodeOptions{.allow_trailing_bytes = true});
  if (!head) throw std::runtime_error("bad envelope: " + head.error->message());
  Frame frame{first.take(), etf::decode_term(bytes.subspan(head.end))};
  return frame;
}

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// The major version of the OCaml this build uses (CMake passes its version).
int ocaml_major() { return CAMLBEAM_OCAML_MAJOR; }

// Whether a process exists (a zombie counts).
bool alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Waits until `done` or the time is up; whether `done`.
template <class Done>
bool eventually(Done done, std::chrono::milliseconds within) {
  const auto deadline = Clock::now() + within;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A field of /proc/<pid>/status in kB ("VmRSS"), or -1.
long status_kb(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (starts_with(line, field + ":")) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

// The memory only this process maps (Private_Clean + Private_Dirty of
// /proc/<pid>/smaps_rollup), in kB, or -1.
long private_kb(pid_t pid) {
  std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  long kb = -1;
  while (std::getline(rollup, line)) {
    for (const char* field : {"Private_Clean:", "Private_Dirty:"}) {
      if (starts_with(line, field)) kb = std::max(kb, 0L) + std::strtol(line.c_str() + std::strlen(field), nullptr, 10);
    }
  }
  return kb;
}

// The parent of a process, from /proc/<pid>/stat, or -1.
pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  return static_cast<pid_t>(std::strtol(text.c_str() + close + 4, nullptr, 10));
}

// One worker, under its keeper: `pid()` is the process spawned (the keeper), `os_pid` the
// one hello names (the worker, which runs OCaml). Everything that waits is bounded.
class Worker {
 public:
  explicit Worker(const char* executable, std::vector<std::pair<std::string, std::string>> env = {},
                  std::vector<std::string> options = {}) {
    int to_worker[2];
    int from_worker[2];
    if (::pipe2(to_worker, O_CLOEXEC) != 0 || ::pipe2(from_worker, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    char stderr_path[] = "/tmp/camlbeam-port-test-stderr-XXXXXX";
    stderr_fd_ = ::mkstemp(stderr_path);
    if (stderr_fd_ < 0) throw std::runtime_error("mkstemp");
    ::unlink(stderr_path);
    std::vector<char*> argv{const_cast<char*>(executable)};
    for (std::string& option : options) argv.push_back(option.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec. Move the ends above 4 first, so that the
      // dup2 onto 3 and 4 cannot clobber one another.
      const int in = ::fcntl(to_worker[0], F_DUPFD, 10);
      const int out = ::fcntl(from_worker[1], F_DUPFD, 10);
      ::dup2(in, 3);
      ::dup2(out, 4);
      ::dup2(stderr_fd_, 2);
      for (auto& [name, val] : env) ::setenv(name.c_str(), val.c_str(), 1);
      ::execv(executable, argv.data());
      ::_exit(127);
    }
    ::close(to_worker[0]);
    ::close(from_worker[1]);
    in_ = to_worker[1];
    out_ = from_worker[0];
    reader_.emplace(out_, 1 << 30);
  }
  ~Worker() {
    close_input();
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (os_pid > 0) ::kill(os_pid, SIGKILL);  // if the keeper died before it could
    if (out_ >= 0) ::close(out_);
    ::close(stderr_fd_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  pid_t pid() const { return pid_; }

  void send_raw(std::span<const std::uint8_t> body) { write_all(camlbeam::port::framed(body)); }
  void send(const etf::Term& t) { send_raw(etf::encode(t)); }
  void send(std::string_view text) { send(term(text)); }
  static std::vector<std::uint8_t> frame_of(std::string_view text) { return camlbeam::port::framed(etf::encode(term(text))); }

  void write_all(std::span<const std::uint8_t> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error("write to the worker failed");
      done += static_cast<std::size_t>(n);
    }
  }

  // The next frame, or nullopt if none came within the time or the worker closed its end
  // (then end_of_output() is true).
  std::optional<Frame> receive(std::chrono::milliseconds within = 10s) {
    const auto deadline = Clock::now() + within;
    for (;;) {
      if (auto frame = reader_->next()) return split(*frame);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      if (reader_->fill() == camlbeam::port::FrameReader::Fill::end_of_file) {
        end_of_output_ = true;
        return std::nullopt;
      }
    }
  }
  bool end_of_output() const { return end_of_output_; }

  // The next frame that is not a log line or a heartbeat; those are kept in logs() and
  // heartbeats().
  std::optional<Frame> receive_skipping_logs(std::chrono::milliseconds within = 10s) {
    for (int i = 0; i < 100000; ++i) {
      std::optional<Frame> frame = receive(within);
      if (!frame) return frame;
      const std::string envelope = frame->envelope.to_string();
      if (starts_with(envelope, "{log,")) {
        logs_.push_back(frame->payload.to_string());
      } else if (starts_with(envelope, "{heartbeat,")) {
        heartbeats_.push_back(*frame->envelope.tuple_elements()[1].as_int64());
        EXPECT_EQ(frame->payload.to_string(), "[]");
      } else {
        return frame;
      }
    }
    return std::nullopt;
  }

  // {reply, Ref} and its answer, as text.
  std::string answer_to(std::string_view ref, std::chrono::milliseconds within = 10s) {
    std::optional<Frame> frame = receive_skipping_logs(within);
    if (!frame) return "<no frame>";
    const std::string expected = "{reply," + std::string(ref) + "}";
    if (frame->envelope.to_string() != expected) return "<envelope " + frame->envelope.to_string() + ">";
    return frame->payload.to_string();
  }

  void hello(std::string_view protocol = "2") {
    send("{hello, hello_ref, #{worker_id => 7, worker_pid => " + std::string(test_pid) + ", protocol => " +
         std::string(protocol) + "}}");
  }

  void close_input() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

  // The keeper's exit status (or 128 + signal), or nullopt if it did not exit in time.
  std::optional<int> wait_exit(std::chrono::milliseconds within = 10s) {
    std::optional<int> status;
    eventually(
        [&] {
          int raw = 0;
          if (::waitpid(pid_, &raw, WNOHANG) != pid_) return false;
          exited_ = true;
          status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
          return true;
        },
        within);
    return status;
  }

  // What the keeper and the worker wrote on stderr so far.
  std::string stderr_text() const {
    std::string text;
    char chunk[4096];
    for (off_t at = 0;;) {
      const ssize_t n = ::pread(stderr_fd_, chunk, sizeof chunk, at);
      if (n <= 0) break;
      text.append(chunk, static_cast<std::size_t>(n));
      at += n;
    }
    return text;
  }

  const std::vector<std::string>& logs() const { return logs_; }
  const std::vector<std::int64_t>& heartbeats() const { return heartbeats_; }
  static constexpr const char* test_pid = "#Pid<test@host.1.2.3>";
  pid_t os_pid = -1;  // from hello

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  int stderr_fd_ = -1;
  bool exited_ = false;
  bool end_of_output_ = false;
  std::optional<camlbeam::port::FrameReader> reader_;
  std::vector<std::string> logs_;
  std::vector<std::int64_t> heartbeats_;
};

struct Flavour {
  const char* name;
  const char* executable;
  const char* plugin;  // nullptr: linked in
  const char* runtime;  // what hello says
};

void PrintTo(const Flavour& flavour, std::ostream* os) { *os << flavour.name; }

// {ok, #{atoms => A, exports => E, flavour => F, ocaml_version => V, os_pid => P, protocol => 2}}:
// checks all but P, which it returns (-1 if the answer is not of that shape), A, which must be
// `atoms` (the atoms declared by the code linked into the worker), and E, the exports of the
// code linked into the worker: in the module static when there is any (`linked`), else none.
pid_t check_hello(const std::string& answer, const char* runtime, std::string_view atoms = "[]",
                  bool linked = false) {
  const etf::Term hello = term(answer);
  const auto ok = hello.tuple_elements();
  if (ok.size() != 2 || !ok[0].is_atom("ok")) {
    ADD_FAILURE() << answer;
    return -1;
  }
  const auto* info = ok[1].get_if<etf::Map>();
  if (info == nullptr || info->flat.size() != 12) {
    ADD_FAILURE() << answer;
    return -1;
  }
  EXPECT_EQ(info->flat[0].to_string() + "=" + info->flat[1].to_string(), "atoms=" + std::string(atoms));
  EXPECT_EQ(info->flat[2].to_string(), "exports");
  if (linked) {
    EXPECT_TRUE(starts_with(info->flat[3].to_string(), "[{<<\"static\">>,")) << answer;
  } else {
    EXPECT_EQ(info->flat[3].to_string(), "[]");
  }
  EXPECT_EQ(info->flat[4].to_string() + "=" + info->flat[5].to_string(), std::string("flavour=") + runtime);
  EXPECT_EQ(info->flat[6].to_string() + "=" + info->flat[7].to_string(), std::string("ocaml_version=<<\"") + CAMLBEAM_OCAML_VERSION + "\">>");
  EXPECT_EQ(info->flat[8].to_string(), "os_pid");
  EXPECT_EQ(info->flat[10].to_string() + "=" + info->flat[11].to_string(), "protocol=2");
  return static_cast<pid_t>(info->flat[9].as_int64().value_or(-1));
}

class PortWorker : public testing::TestWithParam<Flavour> {
 protected:
  bool native() const { return std::string_view(GetParam().runtime) == "native"; }
  std::string plugin(std::string_view directory, std::string_view name) const {
    return std::string(directory) + "/" + std::string(name) + (native() ? ".cmxs" : ".cma");
  }
  // A worker that said hello and loaded the test plugins: porttest, and the hostile
  // suite's plugin (erlang/test/plugins/camlbeam_hostile.ml), unless they are linked in.
  std::unique_ptr<Worker> ready_worker(std::vector<std::pair<std::string, std::string>> env = {},
                                       std::vector<std::string> options = {}) {
    auto worker = std::make_unique<Worker>(GetParam().executable, std::move(env), std::move(options));
    worker->hello();
    const bool load = GetParam().plugin != nullptr;
    if (load) {
      worker->send("{load, load_ref, <<\"" + plugin(CAMLBEAM_PORT_PLUGINS, "porttest") + "\">>, 10000}");
      worker->send("{load, hostile_ref, <<\"" + plugin(CAMLBEAM_HOSTILE_PLUGINS, "camlbeam_hostile") + "\">>}");
    }
    worker->os_pid = check_hello(worker->answer_to("hello_ref"), GetParam().runtime, "[]", !load);
    if (load) {
      // Each answer reports the plugin's exports, in the module named after its file.
      EXPECT_TRUE(starts_with(worker->answer_to("load_ref"), "{ok,#{exports => [{<<\"porttest\">>,"));
      EXPECT_TRUE(starts_with(worker->answer_to("hostile_ref"), "{ok,#{exports => [{<<\"camlbeam_hostile\">>,"));
    }
    return worker;
  }
};

TEST_P(PortWorker, SaysHelloLoadsAndAnswersCalls) {
  auto worker = ready_worker();
  worker->send("{call, r1, identity, [{a, [1, 2.5, <<\"bin\">>], #{k => \"v\"}}]}");
  EXPECT_EQ(worker->answer_to("r1"), "{ok,{a,[1,2.5,<<\"bin\">>],#{k => \"v\"}}}");
  worker->send("{call, r2, whoami, []}");
  EXPECT_EQ(worker->answer_to("r2"), std::string("{ok,{port,7,") + Worker::test_pid + "}}");
  worker->send("{call, r3, nope, [], 1000}");
  EXPECT_EQ(worker->answer_to("r3"), "{error,{undef,nope}}");
  worker->close_input();
  EXPECT_EQ(worker->wait_exit(), 0);
}

TEST_P(PortWorker, HelloNamesTheProcessThatRunsOcamlUnderItsKeeper) {
  auto worker = ready_worker();
  ASSERT_GT(worker->os_pid, 0);
  EXPECT_NE(worker->os_pid, worker->pid());
  EXPECT_EQ(parent_of(worker->os_pid), worker->pid());
  worker->send("{call, r, os_pid, []}");
  EXPECT_EQ(worker->answer_to("r"), "{ok," + std::to_string(worker->os_pid) + "}");
  // The keeper is small: it never started OCaml. Most of its resident pages are the
  // executable's and libc's, shared; what is its own is a few pages (not so under the
  // sanitizers, whose allocator and shadow memory come first).
  if (sanitized) return;
  const long keeper_private_kb = private_kb(worker->pid());
  EXPECT_GT(keeper_private_kb, 0);
  EXPECT_LT(keeper_private_kb, 1024);
  EXPECT_LT(status_kb(worker->pid(), "RssAnon"), 512);
  EXPECT_GT(private_kb(worker->os_pid), 2 * keeper_private_kb);
}

TEST_P(PortWorker, RefusesAHelloOfAnotherProtocol) {
  for (const char* protocol : {"1", "3", "two"}) {
    Worker worker(GetParam().executable);
    worker.hello(protocol);
    const std::string answer = worker.answer_to("hello_ref");
    EXPECT_TRUE(starts_with(answer, "{error,{bad_request,<<\"hello: this worker speaks protocol 2, not ")) << answer;
  }
  Worker worker(GetParam().executable);
  worker.send("{hello, hello_ref, #{worker_id => 7, worker_pid => " + std::string(Worker::test_pid) + "}}");
  EXPECT_EQ(worker.answer_to("hello_ref"),
            "{error,{bad_request,<<\"hello: Info must say which protocol the Erlang side speaks (protocol => 2)\">>}}");
}

std::string binary_of(std::size_t n) { return "<<\"" + std::string(n, 'x') + "\">>"; }

TEST_P(PortWorker, ReplacesAnAnswerOverTheLimitWithAnError) {
  // Room for the answers to hello and the loads, which list the plugins' exports.
  auto worker = ready_worker({}, {"--max-reply-size=10000"});
  worker->send("{call, r, identity, [" + binary_of(10000) + "]}");
  // 131 {reply, r} takes 15 bytes (atoms as ATOM_EXT), 131 {ok, <<...>>} 1 + 2 + 5 + 5 + 10000.
  EXPECT_EQ(worker->answer_to("r"), "{error,{reply_too_large,10028,10000}}");
  worker->send("{call, r, identity, [" + binary_of(9972) + "]}");  // exactly 10000 bytes
  EXPECT_EQ(worker->answer_to("r"), "{ok," + binary_of(9972) + "}");
  // Erl.send obeys the same limit, as an exception in the export that sends.
  worker->send("{call, r, send, [" + std::string(Worker::test_pid) + ", " + binary_of(10000) + "]}");
  const std::string answer = worker->answer_to("r");
  EXPECT_TRUE(contains(answer, "larger than max_reply_size (10000 bytes)")) << answer;
}

TEST_P(PortWorker, NeverSendsAMapThatWouldCrashTheVm) {
  auto worker = ready_worker();
  // Words most significant first: [2, 0, 0, 1] and [2, 0, 0, 2] on the wire.
  worker->send("{call, r, otp_unsafe_map, [#Ref<'other@host'.1.1.0.0.2>, #Ref<'other@host'.1.2.0.0.2>]}");
  const std::string answer = worker->answer_to("r");
  EXPECT_TRUE(starts_with(answer, "{error,{bad_reply,<<\"the answer cannot be encoded: a map of more than 32 keys")) << answer;
}

TEST_P(PortWorker, AnswersPipelinedRequestsInOrder) {
  auto worker = ready_worker();
  // Written in one go, before reading any answer: the worker reads them in batches.
  std::vector<std::uint8_t> batch;
  constexpr int calls = 2000;
  for (int i = 0; i < calls; ++i) {
    const auto call = Worker::frame_of("{call, " + std::to_string(i) + ", identity, [{n, " + std::to_string(i) + "}]}");
    batch.insert(batch.end(), call.begin(), call.end());
    if (i % 7 == 0) {  // a cast in between: no answer, order kept
      const auto cast = Worker::frame_of("{cast, identity, [x]}");
      batch.insert(batch.end(), cast.begin(), cast.end());
    }
  }
  std::thread writer([&] { worker->write_all(batch); });
  for (int i = 0; i < calls; ++i) {
    ASSERT_EQ(worker->answer_to(std::to_string(i)), "{ok,{n," + std::to_string(i) + "}}");
  }
  writer.join();
  EXPECT_TRUE(worker->logs().empty());
}

TEST_P(PortWorker, SendsMessagesBeforeTheReplyOfTheCallThatSentThem) {
  auto worker = ready_worker();
  worker->send(std::string("{call, r, send, [") + Worker::test_pid + ", {hello, <<\"world\">>}]}");
  std::optional<Frame> message = worker->receive_skipping_logs();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->envelope.to_string(), std::string("{send,") + Worker::test_pid + "}");
  EXPECT_EQ(message->payload.to_string(), "{hello,<<\"world\">>}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,ok}");
}

TEST_P(PortWorker, CallsErlangAndRunsRequestsReadMeanwhileAfterwards) {
  auto worker = ready_worker();
  worker->send("{call, r1, call_erlang, [lists, reverse, [[1, 2, 3]]]}");
  std::optional<Frame> call = worker->receive_skipping_logs();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->envelope.to_string(), "{erl_call,1}");
  EXPECT_EQ(call->payload.to_string(), "{lists,reverse,[[1,2,3]]}");
  // A request arrives before the answer: it waits for the call in progress.
  worker->send("{call, r2, identity, [second]}");
  worker->send("{erl_reply, 1, {ok, [3, 2, 1]}}");
  EXPECT_EQ(worker->answer_to("r1"), "{ok,{ok,[3,2,1]}}");
  EXPECT_EQ(worker->answer_to("r2"), "{ok,second}");
}

TEST_P(PortWorker, WhatAPluginPrintsDoesNotReachTheProtocol) {
  auto worker = ready_worker();
  worker->send("{call, r, chatty, [<<\"noise on stdout\">>]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,<<\"noise on stdout\">>}");
  worker->send("{call, r, identity, [fine]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,fine}");
}

TEST_P(PortWorker, LogsAndSkipsFramesItCannotAnswer) {
  auto worker = ready_worker();
  const std::vector<std::uint8_t> junk = {'n', 'o', 't', ' ', 'e', 't', 'f'};
  worker->send_raw(junk);
  worker->send("{what, is, this}");
  worker->send("{cast, nope, []}");
  worker->send("{call, r, identity, [still_fine]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,still_fine}");
  ASSERT_EQ(worker->logs().size(), 3u);
  EXPECT_TRUE(contains(worker->logs()[0], "not valid ETF")) << worker->logs()[0];
  EXPECT_TRUE(contains(worker->logs()[1], "{what,is,this}")) << worker->logs()[1];
  EXPECT_TRUE(contains(worker->logs()[2], "undef")) << worker->logs()[2];
}

TEST_P(PortWorker, HasTheWorkerGcDefaultsUnlessOcamlrunparamIsSet) {
  // {minor_heap_size, max_overhead, custom_minor_max_size}. OCaml 5 has no automatic
  // compaction: it keeps no max_overhead (Gc.get gives 0), and its default
  // custom_minor_max_size is 70,000 bytes where 4.13's is 8,192.
  const bool ocaml5 = ocaml_major() >= 5;
  auto tuned = ready_worker();
  tuned->send("{call, r, gc_settings, []}");
  EXPECT_EQ(tuned->answer_to("r"), ocaml5 ? "{ok,{1048576,0,1073741824}}" : "{ok,{1048576,5000,1073741824}}");
  auto chosen = ready_worker({{"OCAMLRUNPARAM", "s=300k"}});
  chosen->send("{call, r, gc_settings, []}");
  EXPECT_EQ(chosen->answer_to("r"), ocaml5 ? "{ok,{307200,0,70000}}" : "{ok,{307200,500,8192}}");
}

TEST_P(PortWorker, AnswersACallWhoseArgumentsCannotBeDecoded) {
  auto worker = ready_worker();
  // {call, r, identity, [Deep]}, Deep 150,000 lists deep: over the decoder's depth limit
  // (100,000), so nothing of the request reaches OCaml; its Ref still gets an answer.
  std::vector<std::uint8_t> frame = {131, 104, 4, 100, 0, 4, 'c', 'a', 'l', 'l', 100, 0, 1, 'r',
                                     100, 0, 8, 'i', 'd', 'e', 'n', 't', 'i', 't', 'y', 108, 0, 0, 0, 1};
  constexpr int depth = 150'000;
  for (int i = 0; i < depth; ++i) frame.insert(frame.end(), {108, 0, 0, 0, 1});
  frame.insert(frame.end(), depth + 2, 106);
  worker->send_raw(frame);
  const std::string answer = worker->answer_to("r");
  EXPECT_TRUE(starts_with(answer, "{error,{bad_request,<<\"the request could not be decoded: ")) << answer;
  EXPECT_TRUE(contains(answer, "depth")) << answer;
  worker->send("{call, r2, identity, [fine]}");
  EXPECT_EQ(worker->answer_to("r2"), "{ok,fine}");
}

// {ok, {MinorCollections, PromotedWords}} -> the two numbers.
std::pair<long, long> gc_counts(Worker& worker) {
  worker.send("{call, gc, gc_counts, []}");
  const std::string answer = worker.answer_to("gc");
  long minor = -1;
  long promoted = -1;
  EXPECT_EQ(std::sscanf(answer.c_str(), "{ok,{%ld,%ld}}", &minor, &promoted), 2) << answer;
  return {minor, promoted};
}

TEST_P(PortWorker, EmptiesTheMinorHeapBetweenRequestsSoThatTheyDieYoung) {
  auto worker = ready_worker();
  // A list of 70,000 integers is 350k words on the OCaml heap: over 1/32 of the
  // worker's 1M-word minor heap, which is nearly empty when the call starts.
  std::string list = "[";
  for (int i = 0; i < 70'000; ++i) list += (i ? "," : "") + std::to_string(i);
  list += "]";
  const auto before = gc_counts(*worker);
  worker->send("{call, r, identity, [" + list + "]}");
  ASSERT_EQ(worker->answer_to("r").substr(0, 8), "{ok,[0,1");
  const auto after = gc_counts(*worker);
  // No collection during the call (nothing was promoted), one right after it. OCaml 5 may
  // count one more there: the major slice a minor collection runs can end a major cycle,
  // which empties the minor heap again (of nothing, by then).
  if (ocaml_major() >= 5) {
    EXPECT_GE(after.first - before.first, 1);
    EXPECT_LE(after.first - before.first, 2);
  } else {
    EXPECT_EQ(after.first - before.first, 1);
  }
  EXPECT_LT(after.second - before.second, 10'000);  // of the 350k words the call allocated
}

TEST_P(PortWorker, ExitsWithStatus2WhenAFrameAnnouncesTooMuch) {
  Worker worker(GetParam().executable);
  const std::uint8_t header[4] = {0xff, 0xff, 0xff, 0xff};
  worker.write_all(header);
  EXPECT_EQ(worker.wait_exit(), 2);
}

// ---------------------------------------------------------------------------------------
// Deadlines, heartbeats, cancels

// Frames written in one go, so that the worker reads them together.
std::vector<std::uint8_t> batch_of(std::initializer_list<const char*> frames) {
  std::vector<std::uint8_t> batch;
  for (const char* frame : frames) {
    const auto f = Worker::frame_of(frame);
    batch.insert(batch.end(), f.begin(), f.end());
  }
  return batch;
}


TEST_P(PortWorker, ADeadlineInterruptsASleepingCall) {
  auto worker = ready_worker();
  const auto start = Clock::now();
  worker->send("{call, r1, sleep, [5000], 200}");
  EXPECT_EQ(worker->answer_to("r1"), "{error,timeout}");
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 1500ms);
  // The worker goes on; a call within its deadline, or with none, runs to its end.
  worker->send("{call, r2, sleep, [50], 2000}");
  EXPECT_EQ(worker->answer_to("r2"), "{ok,50}");
  worker->send("{call, r3, sleep, [50], infinity}");
  EXPECT_EQ(worker->answer_to("r3"), "{ok,50}");
}

// Erl.call_erlang waits in C++ for its answer: the cancel signal ends the wait, and the
// answer that comes later is dropped.
TEST_P(PortWorker, ADeadlineInterruptsACallWaitingForErlang) {
  auto worker = ready_worker();
  worker->send("{call, r1, call_erlang, [lists, reverse, [[1]]], 200}");
  std::optional<Frame> call = worker->receive_skipping_logs();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->envelope.to_string(), "{erl_call,1}");
  EXPECT_EQ(worker->answer_to("r1"), "{error,timeout}");
  worker->send("{erl_reply, 1, {ok, [1]}}");  // too late: nobody waits for it
  worker->send("{call, r2, call_erlang, [erlang, node, []]}");
  call = worker->receive_skipping_logs();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->envelope.to_string(), "{erl_call,2}");
  worker->send("{erl_reply, 2, {ok, nonode}}");
  EXPECT_EQ(worker->answer_to("r2"), "{ok,{ok,nonode}}");
  EXPECT_TRUE(worker->logs().empty());
}

// The atoms a plugin declares come with the answer to its load, each once; the code linked
// into a worker declares its own with the answer to hello. A load with none answers ok.
TEST_P(PortWorker, DeclaredAtomsComeWithTheLoadOrTheHello) {
  const std::string declared = "[<<\"porttest_declared\">>,<<\"porttest_other\">>]";
  Worker worker(GetParam().executable, {{"PORTTEST_ATOMS", "porttest_declared,porttest_other"}});
  worker.hello();
  const bool linked = GetParam().plugin == nullptr;
  worker.os_pid = check_hello(worker.answer_to("hello_ref"), GetParam().runtime, linked ? declared : "[]", linked);
  if (!linked) {
    worker.send("{load, porttest_ref, <<\"" + plugin(CAMLBEAM_PORT_PLUGINS, "porttest") + "\">>}");
    const std::string answer = worker.answer_to("porttest_ref");
    EXPECT_TRUE(starts_with(answer, "{ok,#{atoms => " + declared + ",exports => [{<<\"porttest\">>,")) << answer;
  }
  const std::string path = plugin(CAMLBEAM_PORT_PLUGINS, "declares_atoms");
  worker.send("{load, atoms_ref, <<\"" + path + "\">>, 10000}");
  EXPECT_EQ(worker.answer_to("atoms_ref"),
            "{ok,#{atoms => [<<\"porttest_bad_header\">>,<<\"porttest_incomplete\">>,<<\"porttest_tag\">>],"
            "exports => [{<<\"declares_atoms\">>,<<\"tagged\">>,1,<<\"fun((ocaml:int63()) -> {atom(), ocaml:int63()})\">>}]}}");
  worker.send("{call, r, tagged, [3]}");
  EXPECT_EQ(worker.answer_to("r"), "{ok,{porttest_bad_header,3}}");
  // Loaded already: refused, and no atom comes twice.
  worker.send("{load, again_ref, <<\"" + path + "\">>}");
  EXPECT_TRUE(starts_with(worker.answer_to("again_ref"), "{error,{load_failed,already_loaded,")) << path;
}

// A load whose plugin initialiser never ends is interrupted by its deadline too (a static
// worker loads .cmxs plugins on top of what it carries, so it is tested as well).
TEST_P(PortWorker, ADeadlineInterruptsALoad) {
  auto worker = ready_worker();
  worker->send("{load, l, <<\"" + plugin(CAMLBEAM_PORT_PLUGINS, "init_loops") + "\">>, 200}");
  EXPECT_EQ(worker->answer_to("l", 3s), "{error,timeout}");
  worker->send("{call, r, identity, [alive]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,alive}");
}

TEST_P(PortWorker, ExitsWith124WhenARequestCannotBeInterrupted) {
  auto worker = ready_worker({}, {"--cancel-grace=300"});
  const auto start = Clock::now();
  worker->send("{call, r, spin, [], 200}");  // hostile's: every signal blocked
  EXPECT_EQ(worker->wait_exit(5s), 124);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 500ms);  // deadline + grace
  EXPECT_LT(took, 2000ms);
  EXPECT_TRUE(contains(worker->stderr_text(), "overran its deadline (200 ms) by the grace period")) << worker->stderr_text();
  EXPECT_FALSE(alive(worker->os_pid));
}

TEST_P(PortWorker, HeartbeatsWhileALongRequestRunsAndOnlyThen) {
  auto worker = ready_worker({}, {"--heartbeat=100"});
  for (int i = 0; i < 5; ++i) {
    worker->send("{call, short, sleep, [20]}");
    EXPECT_EQ(worker->answer_to("short"), "{ok,20}");
  }
  EXPECT_TRUE(worker->heartbeats().empty());
  worker->send("{call, long, sleep, [550]}");
  EXPECT_EQ(worker->answer_to("long"), "{ok,550}");
  const std::vector<std::int64_t>& beats = worker->heartbeats();
  ASSERT_GE(beats.size(), 4u);  // at about 100, 200, 300, 400 and 500 ms
  ASSERT_LE(beats.size(), 6u);
  EXPECT_GE(beats.front(), 100);
  for (std::size_t i = 1; i < beats.size(); ++i) EXPECT_GT(beats[i], beats[i - 1]);
  EXPECT_LE(beats.back(), 550);
}

// Replies of the requests before a long one are not held back by it.
TEST_P(PortWorker, RepliesMadeBeforeALongRequestGoOutWhileItRuns) {
  auto worker = ready_worker();
  worker->write_all(batch_of({"{call, quick, identity, [1]}", "{call, slow, sleep, [1500]}"}));
  const auto start = Clock::now();
  EXPECT_EQ(worker->answer_to("quick"), "{ok,1}");
  EXPECT_LT(Clock::now() - start, 1000ms);
  EXPECT_EQ(worker->answer_to("slow"), "{ok,1500}");
}

// A queue of requests, each shorter than the watch's tick: their replies go out as they are
// made (within a few ms), not once the whole queue is served. Erlang hears from a worker
// busy with such a queue; it took one that said nothing for as long as the queue for a
// stalled one (stall_timeout), and replaced it.
TEST_P(PortWorker, RepliesOfAQueueOfShortRequestsGoOutAsTheyAreMade) {
  auto worker = ready_worker();
  constexpr int calls = 40;  // 40 x 25 ms: 1 s of work, read in one go
  std::vector<std::uint8_t> batch;
  for (int i = 0; i < calls; ++i) {
    const auto call = Worker::frame_of("{call, " + std::to_string(i) + ", sleep, [25]}");
    batch.insert(batch.end(), call.begin(), call.end());
  }
  const auto start = Clock::now();
  worker->write_all(batch);
  EXPECT_EQ(worker->answer_to("0"), "{ok,25}");
  EXPECT_LT(Clock::now() - start, 400ms);
  for (int i = 1; i < calls / 2; ++i) ASSERT_EQ(worker->answer_to(std::to_string(i)), "{ok,25}");
  EXPECT_LT(Clock::now() - start, 900ms);  // half of them, well before the last has run
  for (int i = calls / 2; i < calls; ++i) ASSERT_EQ(worker->answer_to(std::to_string(i)), "{ok,25}");
  EXPECT_TRUE(worker->heartbeats().empty());
}

TEST_P(PortWorker, ACancelSkipsAnUnrunCall) {
  auto worker = ready_worker();
  // Calls and their cancels in one read: none of them has started.
  worker->write_all(batch_of({"{call, r1, bump, []}", "{call, r2, bump, [], 1000}", "{load, r3, <<\"nowhere\">>, 100}",
                              "{cancel, r2}", "{cancel, r1}", "{cancel, r3}", "{call, r4, bumps, []}"}));
  for (const char* ref : {"r1", "r2", "r3"}) EXPECT_EQ(worker->answer_to(ref), "{error,timeout}") << ref;
  EXPECT_EQ(worker->answer_to("r4"), "{ok,0}");  // no bump ran
  // A call that runs when its cancel comes, one already answered, an unknown Ref: ignored.
  worker->send("{call, r5, sleep, [300]}");
  std::this_thread::sleep_for(100ms);
  worker->write_all(batch_of({"{cancel, r5}", "{cancel, r4}", "{cancel, nobody}", "{call, r6, bumps, []}"}));
  EXPECT_EQ(worker->answer_to("r5"), "{ok,300}");
  EXPECT_EQ(worker->answer_to("r6"), "{ok,0}");
  EXPECT_TRUE(worker->logs().empty());
}

// The call and the cancel come in separate reads, the cancel while a long call runs: the
// worker looks at what the pipe holds before it starts a request it read long ago.
TEST_P(PortWorker, ACancelThatArrivesWhileAnotherCallRunsSkipsTheCallsReadBeforeIt) {
  auto worker = ready_worker();
  worker->write_all(batch_of({"{call, r1, sleep, [300]}", "{call, r2, bump, [], 5000}", "{call, r3, bump, []}"}));
  std::this_thread::sleep_for(100ms);
  worker->send("{cancel, r2}");
  EXPECT_EQ(worker->answer_to("r1"), "{ok,300}");
  EXPECT_EQ(worker->answer_to("r2"), "{error,timeout}");
  EXPECT_EQ(worker->answer_to("r3"), "{ok,1}");
}

// Requests kept aside while Erl.call_erlang waits can be cancelled too.
TEST_P(PortWorker, ACancelSkipsACallKeptAsideDuringCallErlang) {
  auto worker = ready_worker();
  worker->send("{call, r1, call_erlang, [erlang, node, []]}");
  ASSERT_TRUE(worker->receive_skipping_logs());
  worker->send("{call, r2, bump, []}");
  worker->send("{cancel, r2}");
  worker->send("{erl_reply, 1, {ok, nonode}}");
  EXPECT_EQ(worker->answer_to("r1"), "{ok,{ok,nonode}}");
  EXPECT_EQ(worker->answer_to("r2"), "{error,timeout}");
  worker->send("{call, r3, bumps, []}");
  EXPECT_EQ(worker->answer_to("r3"), "{ok,0}");
}

// ---------------------------------------------------------------------------------------
// Refusals, stable request bytes, threads

// An exception in the request path's own OCaml code (here a plugin's signal handler, the
// same path as Out_of_memory or Stack_overflow there) is answered through the Ref.
TEST_P(PortWorker, ARequestTheHostRefusesIsAnsweredThroughItsRef) {
  auto worker = ready_worker();
  worker->send("{call, r, raise_on_sigusr2, [false]}");
  ASSERT_EQ(worker->answer_to("r"), "{ok,ok}");
  // Sent while the worker waits for input: its handler runs at the next poll, in the next
  // request's decoding (map_of_array) or in Erl_host's code.
  for (const char* args : {"[x]", "[#{a => 1, b => 2}]"}) {
    ASSERT_EQ(::kill(worker->os_pid, SIGUSR2), 0);
    worker->send(std::string("{call, r, identity, ") + args + ", 5000}");
    const std::string answer = worker->answer_to("r");
    EXPECT_TRUE(starts_with(answer, "{error,{request_failed,<<\"the worker could not run the request: ")) << answer;
    EXPECT_TRUE(contains(answer, "raised by a SIGUSR2 handler")) << answer;
  }
  // Erl.Cancelled there (what the deadline's signal raises when it lands outside the
  // export) is a timeout.
  worker->send("{call, r, raise_on_sigusr2, [true]}");
  ASSERT_EQ(worker->answer_to("r"), "{ok,ok}");
  for (const char* args : {"[x]", "[#{a => 1, b => 2}]"}) {
    ASSERT_EQ(::kill(worker->os_pid, SIGUSR2), 0);
    worker->send(std::string("{load, r, <<\"nowhere\">>}"));
    EXPECT_EQ(worker->answer_to("r"), "{error,timeout}");
    ASSERT_EQ(::kill(worker->os_pid, SIGUSR2), 0);
    worker->send(std::string("{call, r, identity, ") + args + "}");
    EXPECT_EQ(worker->answer_to("r"), "{error,timeout}");
  }
  worker->send("{call, r, identity, [fine]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,fine}");
}

// Erl.call_erlang from a signal handler in the middle of decoding a request (in the
// map_of_array callback) reads more input, enough that the reader must move its buffer:
// the request being decoded keeps its bytes.
TEST_P(PortWorker, TheRequestBeingDecodedKeepsItsBytesWhileOcamlReadsMore) {
  auto worker = ready_worker();
  worker->send("{call, r, signal_handler_call_erlang, []}");
  ASSERT_EQ(worker->answer_to("r"), "{ok,ok}");
  // 20,000 small maps: one map_of_array callback each; the frame is about 400 KB.
  std::string maps = "[";
  for (int i = 0; i < 20'000; ++i) maps += (i ? ",#{a => " : "#{a => ") + std::to_string(i) + ", b => <<\"xyz\">>}";
  maps += "]";
  ASSERT_EQ(::kill(worker->os_pid, SIGUSR1), 0);  // pending until the first poll: the first callback
  worker->send("{call, big, identity, [" + maps + "]}");
  std::optional<Frame> call = worker->receive_skipping_logs();
  ASSERT_TRUE(call);
  ASSERT_EQ(call->envelope.to_string(), "{erl_call,1}");
  // More than the reader's buffer holds (the big frame fills it): it must read elsewhere.
  worker->send("{call, later, identity, [" + binary_of(1 << 20) + "]}");
  worker->send("{erl_reply, 1, {ok, nonode}}");
  const std::string answer = worker->answer_to("big");
  EXPECT_EQ(answer, "{ok," + term(maps).to_string() + "}");
  EXPECT_EQ(worker->answer_to("later"), "{ok," + binary_of(1 << 20) + "}");
  worker->send("{call, r, signal_handler_calls, []}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,1}");
}

// ---------------------------------------------------------------------------------------
// Memory

TEST_P(PortWorker, AMemoryLimitFailsTheRequestThatNeedsMore) {
  if (sanitized) GTEST_SKIP() << "the sanitizers map terabytes of shadow memory, which RLIMIT_DATA counts";
  constexpr long limit = 400L << 20;
  auto worker = ready_worker({}, {"--max-memory=" + std::to_string(limit)});
  worker->send("{call, r, alloc_string, [1000]}");
  const std::string answer = worker->answer_to("r", 20s);
  EXPECT_TRUE(starts_with(answer, "{error,{ocaml_exception,<<\"Out_of_memory\">>")) << answer;
  worker->send("{call, r, alloc_string, [100]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,104857600}");
  // Without bound (hostile's hog): the export gets Out_of_memory, or, if the GC itself found
  // no memory, the worker dies; never more memory than the limit.
  worker->send("{call, r, hog, [10]}");
  std::optional<Frame> frame = worker->receive_skipping_logs(30s);
  if (frame) {
    EXPECT_EQ(frame->envelope.to_string(), "{reply,r}");
    EXPECT_TRUE(starts_with(frame->payload.to_string(), "{error,{ocaml_exception,<<\"Out_of_memory\">>"))
        << frame->payload.to_string();
    EXPECT_LE(status_kb(worker->os_pid, "VmData") << 10, limit);
    worker->send("{call, r, identity, [alive]}");
    EXPECT_EQ(worker->answer_to("r", 20s), "{ok,alive}");
  } else {
    ASSERT_TRUE(worker->end_of_output()) << "neither an answer nor the worker's end within 30 s";
    const std::optional<int> status = worker->wait_exit(5s);
    ASSERT_TRUE(status);
    EXPECT_NE(*status, 0);
  }
}

TEST_P(PortWorker, RefusesAMemoryLimitBelowWhatItUsesToStart) {
  if (sanitized) GTEST_SKIP() << "the sanitizers map terabytes of shadow memory, which RLIMIT_DATA counts";
  Worker worker(GetParam().executable, {}, {"--max-memory=1000000"});
  EXPECT_EQ(worker.wait_exit(), 64);
  EXPECT_TRUE(contains(worker.stderr_text(), "is below what the worker already uses")) << worker.stderr_text();
}

TEST_P(PortWorker, GivesMemoryBackAfterAnOutsizedRequest) {
  if (sanitized) GTEST_SKIP() << "the sanitizers' allocator keeps freed memory in quarantine";
  auto worker = ready_worker();
  worker->send("{call, r, transient, [300]}");
  EXPECT_EQ(worker->answer_to("r", 30s), "{ok,ok}");
  // Once the worker is idle: the heap compacted, malloc trimmed.
  long rss_kb = -1;
  EXPECT_TRUE(eventually([&] { return (rss_kb = status_kb(worker->os_pid, "VmRSS")) < (100L << 10); }, 5s))
      << rss_kb << " kB resident";
  worker->send("{call, r, identity, [alive]}");
  EXPECT_EQ(worker->answer_to("r"), "{ok,alive}");
}

// ---------------------------------------------------------------------------------------
// The keeper

TEST_P(PortWorker, TheKeeperExitsWithTheWorkersStatus) {
  auto exits = ready_worker();
  exits->send("{call, r, exit, [3]}");
  EXPECT_EQ(exits->wait_exit(), 3);
  auto killed = ready_worker();
  ASSERT_EQ(::kill(killed->os_pid, SIGKILL), 0);
  EXPECT_EQ(killed->wait_exit(), 137);
}

// Children a plugin forked hold the protocol's pipes: when the worker exits, the keeper
// kills them (its process group, and the orphans reparented to it, a setsid'ed grandchild
// among them), so that Erlang sees the end of the port at once. A program it started
// (close-on-exec: no pipes) goes too.
TEST_P(PortWorker, NothingTheWorkerStartedOutlivesIt) {
  auto worker = ready_worker();
  std::vector<pid_t> started;
  for (const char* call : {"{call, r, fork_hold, [60000, false]}", "{call, r, fork_hold, [60000, true]}",
                           "{call, r, fork_grandchild_hold, [60000]}", "{call, r, fork_exec_hold, [60000]}"}) {
    worker->send(call);
    const std::string answer = worker->answer_to("r");
    long pid = 0;
    ASSERT_EQ(std::sscanf(answer.c_str(), "{ok,%ld}", &pid), 1) << answer;
    started.push_back(static_cast<pid_t>(pid));
  }
  // The grandchild's parent exited: the keeper, a subreaper, is its parent now.
  EXPECT_TRUE(eventually([&] { return parent_of(started[2]) == worker->pid(); }, 2s));
  for (const pid_t pid : started) EXPECT_TRUE(alive(pid)) << pid;
  const auto start = Clock::now();
  worker->close_input();
  EXPECT_EQ(worker->wait_exit(5s), 0);
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_FALSE(worker->receive(2s));
  EXPECT_TRUE(worker->end_of_output());
  for (const pid_t pid : started) EXPECT_FALSE(alive(pid)) << pid;
  EXPECT_FALSE(alive(worker->os_pid));
}

TEST_P(PortWorker, AfterErlangHangsUpTheRunningRequestFinishesWithinTheGrace) {
  auto worker = ready_worker({{"CAMLBEAM_PORT_GRACE_MS", "2000"}});
  worker->send("{call, r, sleep, [300]}");
  std::this_thread::sleep_for(100ms);
  worker->close_input();
  EXPECT_EQ(worker->answer_to("r"), "{ok,300}");
  EXPECT_EQ(worker->wait_exit(5s), 0);
}

// Requests still in hand when Erlang hangs up are whole frames, not a broken one: the
// worker finishes the running request and exits 0, without running them, rather than
// exiting 2 after "the pipe closed in the middle of a frame".
TEST_P(PortWorker, AfterErlangHangsUpTheRequestsStillInHandAreDropped) {
  auto worker = ready_worker({{"CAMLBEAM_PORT_GRACE_MS", "2000"}});
  worker->write_all(batch_of({"{call, r1, sleep, [300]}", "{call, r2, sleep, [1000]}", "{call, r3, identity, [3]}"}));
  std::this_thread::sleep_for(100ms);
  worker->close_input();
  EXPECT_EQ(worker->answer_to("r1"), "{ok,300}");
  EXPECT_EQ(worker->wait_exit(1500ms), 0);  // r2 did not run
  EXPECT_FALSE(contains(worker->stderr_text(), "protocol error")) << worker->stderr_text();
}

TEST_P(PortWorker, AfterErlangHangsUpAWorkerThatDoesNotExitIsKilled) {
  for (const char* stuck : {"{call, r, sleep, [30000]}", "{call, r, stop_self, []}"}) {
    SCOPED_TRACE(stuck);
    auto worker = ready_worker({{"CAMLBEAM_PORT_GRACE_MS", "200"}});
    worker->send(stuck);
    std::this_thread::sleep_for(100ms);  // in the export now (or stopped)
    const auto start = Clock::now();
    worker->close_input();
    EXPECT_EQ(worker->wait_exit(5s), 137);
    EXPECT_GE(Clock::now() - start, 200ms);
    EXPECT_LT(Clock::now() - start, 2s);
    EXPECT_FALSE(alive(worker->os_pid));
  }
}

TEST_P(PortWorker, AKeeperAskedToEndTakesTheWorkerWithIt) {
  auto worker = ready_worker();
  worker->send("{call, r, fork_hold, [60000, true]}");
  long child = 0;
  ASSERT_EQ(std::sscanf(worker->answer_to("r").c_str(), "{ok,%ld}", &child), 1);
  ASSERT_EQ(::kill(worker->pid(), SIGTERM), 0);
  EXPECT_EQ(worker->wait_exit(5s), 128 + SIGTERM);
  EXPECT_FALSE(alive(worker->os_pid));
  EXPECT_FALSE(alive(static_cast<pid_t>(child)));
}

INSTANTIATE_TEST_SUITE_P(Flavours, PortWorker,
                         testing::Values(Flavour{"native", CAMLBEAM_PORT_NATIVE, "porttest.cmxs", "native"},
                                         Flavour{"bytecode", CAMLBEAM_PORT_BYTECODE, "porttest.cma", "bytecode"},
                                         Flavour{"static", CAMLBEAM_PORT_STATIC, nullptr, "native"}),
                         [](const testing::TestParamInfo<Flavour>& param) { return std::string(param.param.name); });

// Erl.send from an OCaml thread other than the worker's: refused before anything is
// written, the worker unharmed.
TEST(PortWorkerThreads, ErlSendFromAnotherThreadIsRefused) {
  Worker worker(CAMLBEAM_PORT_THREADS);
  worker.hello();
  worker.os_pid = check_hello(worker.answer_to("hello_ref"), "native", "[]", true);
  worker.send(std::string("{call, r, send_from_thread, [") + Worker::test_pid + "]}");
  const std::string answer = worker.answer_to("r");
  EXPECT_NE(answer.find("Erl.No_transport: this thread is not running a request of a camlbeam worker"),
            std::string::npos)
      << answer;
  worker.send(std::string("{call, r, send, [") + Worker::test_pid + ", fine]}");
  std::optional<Frame> message = worker.receive_skipping_logs();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->payload.to_string(), "fine");
  EXPECT_EQ(worker.answer_to("r"), "{ok,ok}");
}

// OCaml 5: the domains a request spawns inherit its context. The cancel signal, which any
// domain may handle, ends their loops too; Erl.send from one is refused with a reason (the
// port's pipe is written by the worker's own thread only), and the worker serves on.
#if CAMLBEAM_OCAML_MAJOR >= 5
class PortWorkerDomains : public testing::Test {
 protected:
  void SetUp() override {
    worker_ = std::make_unique<Worker>(CAMLBEAM_PORT_NATIVE);
    worker_->hello();
    worker_->os_pid = check_hello(worker_->answer_to("hello_ref"), "native", "[]", false);
    for (const char* name : {"porttest_domains", "porttest"}) {
      worker_->send(std::string("{load, l, <<\"" CAMLBEAM_PORT_PLUGINS "/") + name + ".cmxs\">>}");
      ASSERT_TRUE(starts_with(worker_->answer_to("l"), "{ok,")) << name;
    }
  }
  std::unique_ptr<Worker> worker_;
};

TEST_F(PortWorkerDomains, ADomainSeesTheWorkerOfTheRequestThatSpawnedIt) {
  worker_->send("{call, r, worker_id_in_domain, []}");
  EXPECT_EQ(worker_->answer_to("r"), "{ok,{7,7}}");
}

TEST_F(PortWorkerDomains, ErlSendAndCallErlangFromADomainAreRefusedWithTheirReason) {
  worker_->send(std::string("{call, r, send_from_domain, [") + Worker::test_pid + "]}");
  const std::string answer = worker_->answer_to("r");
  EXPECT_TRUE(contains(answer, "Erl.send: only the thread that runs the worker's requests may send to Erlang"))
      << answer;
  worker_->send("{call, r1, call_erlang_from_domain, []}");
  const std::string refused = worker_->answer_to("r1");
  EXPECT_TRUE(contains(refused, "Erl.call_erlang: only the thread that runs the worker's requests")) << refused;
  worker_->send(std::string("{call, r2, send, [") + Worker::test_pid + ", fine]}");
  std::optional<Frame> message = worker_->receive_skipping_logs();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->payload.to_string(), "fine");
  EXPECT_EQ(worker_->answer_to("r2"), "{ok,ok}");
}

TEST_F(PortWorkerDomains, AStackOverflowInADomainIsTheRequestsError) {
  worker_->send("{call, r, overflow_in_domain, []}");
  const std::string answer = worker_->answer_to("r", 30s);
  EXPECT_TRUE(starts_with(answer, "{error,{ocaml_exception,<<\"Stack_overflow\">>,")) << answer;
  worker_->send("{call, r2, worker_id_in_domain, []}");
  EXPECT_EQ(worker_->answer_to("r2"), "{ok,{7,7}}");
}

TEST_F(PortWorkerDomains, TheDeadlineStopsLoopsInTheDomainsOfTheRequest) {
  for (const char* fn : {"spin_in_domain", "spin_in_two_domains"}) {
    SCOPED_TRACE(fn);
    const auto start = Clock::now();
    worker_->send(std::string("{call, r, ") + fn + ", [], 200}");
    EXPECT_EQ(worker_->answer_to("r", 5s), "{error,timeout}");
    EXPECT_LT(Clock::now() - start, 1500ms);  // well before the grace (1 s) ends the worker
    worker_->send("{call, r2, worker_id_in_domain, []}");
    EXPECT_EQ(worker_->answer_to("r2"), "{ok,{7,7}}");
  }
  EXPECT_TRUE(worker_->logs().empty());
}
#endif

// The exit status of the native worker started with `arguments` and without its pipes,
// its stderr thrown away.
int exit_status_without_pipes(std::vector<std::string> arguments) {
  std::vector<char*> argv{const_cast<char*>(CAMLBEAM_PORT_NATIVE)};
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(3);
    ::close(4);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execv(CAMLBEAM_PORT_NATIVE, argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(PortWorkerStart, RefusesToRunWithoutItsPipes) { EXPECT_EQ(exit_status_without_pipes({}), 64); }

TEST(PortWorkerStart, RefusesBadArgumentsAndAnswersHelpAndVersion) {
  EXPECT_EQ(exit_status_without_pipes({"--max-reply-size=lots"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--max-request-size=0"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--heartbeat=-1"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--cancel-grace=soon"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--max-memory=0"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--no-such-option"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"stray"}), 64);
  EXPECT_EQ(exit_status_without_pipes({"--help"}), 0);
  EXPECT_EQ(exit_status_without_pipes({"--version"}), 0);
}

// A {packet, 4} length holds at most 4294967295 bytes, the header included in what the
// worker allocates: larger limits are refused, never truncated.
TEST(PortWorkerStart, ClampsTheFrameSizesToWhatAPacket4LengthHolds) {
  for (const char* option : {"--max-reply-size", "--max-request-size"}) {
    EXPECT_EQ(exit_status_without_pipes({std::string(option) + "=4294967291", "--help"}), 0) << option;
    EXPECT_EQ(exit_status_without_pipes({std::string(option) + "=4294967292", "--help"}), 64) << option;
    EXPECT_EQ(exit_status_without_pipes({std::string(option) + "=18446744073709551615", "--help"}), 64) << option;
  }
  EXPECT_EQ(exit_status_without_pipes({"--heartbeat=0", "--cancel-grace=0", "--max-memory=1000000000", "--help"}), 0);
}

}  // namespace
