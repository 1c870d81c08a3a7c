// The port workers end to end, native and bytecode: the real executables, spawned with
// their pipes on fds 3 and 4 as open_port(..., [nouse_stdio]) does, driven frame by frame
// with our ETF codec. cpp/port/README.md is the protocol under test.
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

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace etf = camlbeam::etf;
using namespace std::chrono_literals;

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

// One worker process. Everything that waits is bounded.
class Worker {
 public:
  explicit Worker(const char* executable, std::vector<std::pair<std::string, std::string>> env = {},
                  const char* option = nullptr) {
    int to_worker[2];
    int from_worker[2];
    if (::pipe2(to_worker, O_CLOEXEC) != 0 || ::pipe2(from_worker, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec. Move the ends above 4 first, so that the
      // dup2 onto 3 and 4 cannot clobber one another.
      const int in = ::fcntl(to_worker[0], F_DUPFD, 10);
      const int out = ::fcntl(from_worker[1], F_DUPFD, 10);
      ::dup2(in, 3);
      ::dup2(out, 4);
      for (auto& [name, val] : env) ::setenv(name.c_str(), val.c_str(), 1);
      ::execl(executable, executable, option, static_cast<char*>(nullptr));
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
    if (out_ >= 0) ::close(out_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void send_raw(std::span<const std::uint8_t> body) { write_all(camlbeam::port::framed(body)); }
  void send(const etf::Term& t) { send_raw(etf::encode(t)); }
  void send(std::string_view text) { send(term(text)); }

  void write_all(std::span<const std::uint8_t> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error("write to the worker failed");
      done += static_cast<std::size_t>(n);
    }
  }

  // The next frame, or nullopt if none came within the time or the worker closed its end.
  std::optional<Frame> receive(std::chrono::milliseconds within = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
      if (auto frame = reader_->next()) return split(*frame);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      if (reader_->fill() == camlbeam::port::FrameReader::Fill::end_of_file) return std::nullopt;
    }
  }

  // The next frame that is not a log line; log lines are kept in logs().
  std::optional<Frame> receive_skipping_logs(std::chrono::milliseconds within = 10s) {
    for (int i = 0; i < 1000; ++i) {
      std::optional<Frame> frame = receive(within);
      if (!frame || frame->envelope.to_string().rfind("{log,", 0) != 0) return frame;
      logs_.push_back(frame->payload.to_string());
    }
    return std::nullopt;
  }

  // {reply, Ref} and its answer, as text.
  std::string answer_to(std::string_view ref) {
    std::optional<Frame> frame = receive_skipping_logs();
    if (!frame) return "<no frame>";
    const std::string expected = "{reply," + std::string(ref) + "}";
    if (frame->envelope.to_string() != expected) return "<envelope " + frame->envelope.to_string() + ">";
    return frame->payload.to_string();
  }

  void hello() {
    send("{hello, hello_ref, #{worker_id => 7, worker_pid => " + std::string(test_pid) + "}}");
  }

  void close_input() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

  // The exit status (or 128 + signal), or nullopt if it did not exit in time.
  std::optional<int> wait_exit(std::chrono::milliseconds within = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

  const std::vector<std::string>& logs() const { return logs_; }
  static constexpr const char* test_pid = "#Pid<test@host.1.2.3>";

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::optional<camlbeam::port::FrameReader> reader_;
  std::vector<std::string> logs_;
};

struct Flavour {
  const char* name;
  const char* executable;
  const char* plugin;  // nullptr: linked in
  const char* runtime;  // what hello says
};

void PrintTo(const Flavour& flavour, std::ostream* os) { *os << flavour.name; }

class PortWorker : public testing::TestWithParam<Flavour> {
 protected:
  std::string plugin() const { return std::string(CAMLBEAM_PORT_PLUGINS) + "/" + GetParam().plugin; }
  // A worker that said hello and loaded the test plugin.
  std::unique_ptr<Worker> ready_worker(std::vector<std::pair<std::string, std::string>> env = {},
                                       const char* option = nullptr) {
    auto worker = std::make_unique<Worker>(GetParam().executable, std::move(env), option);
    worker->hello();
    if (GetParam().plugin != nullptr) worker->send("{load, load_ref, <<\"" + plugin() + "\">>}");
    const std::string hello = worker->answer_to("hello_ref");
    EXPECT_EQ(hello, "{ok,#{flavour => " + std::string(GetParam().runtime) +
                         ",ocaml_version => <<\"4.13.1\">>,protocol => 1}}");
    if (GetParam().plugin != nullptr) {
      EXPECT_EQ(worker->answer_to("load_ref"), "ok");
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
  worker->send("{call, r3, nope, []}");
  EXPECT_EQ(worker->answer_to("r3"), "{error,{undef,nope}}");
  worker->close_input();
  EXPECT_EQ(worker->wait_exit(), 0);
}

std::string binary_of(std::size_t n) { return "<<\"" + std::string(n, 'x') + "\">>"; }

TEST_P(PortWorker, ReplacesAnAnswerOverTheLimitWithAnError) {
  auto worker = ready_worker({}, "--max-reply-size=1000");
  worker->send("{call, r, identity, [" + binary_of(1000) + "]}");
  // 131 {reply, r} takes 15 bytes (atoms as ATOM_EXT), 131 {ok, <<...>>} 1 + 2 + 5 + 5 + 1000.
  EXPECT_EQ(worker->answer_to("r"), "{error,{reply_too_large,1028,1000}}");
  worker->send("{call, r, identity, [" + binary_of(972) + "]}");  // exactly 1000 bytes
  EXPECT_EQ(worker->answer_to("r"), "{ok," + binary_of(972) + "}");
  // Erl.send obeys the same limit, as an exception in the export that sends.
  worker->send("{call, r, send, [" + std::string(Worker::test_pid) + ", " + binary_of(1000) + "]}");
  const std::string answer = worker->answer_to("r");
  EXPECT_NE(answer.find("larger than max_reply_size (1000 bytes)"), std::string::npos) << answer;
}

TEST_P(PortWorker, NeverSendsAMapThatWouldCrashTheVm) {
  auto worker = ready_worker();
  worker->send("{call, r, otp_unsafe_map, []}");
  const std::string answer = worker->answer_to("r");
  EXPECT_EQ(answer.rfind("{error,{bad_reply,<<\"the answer cannot be encoded: a map of more than 32 keys", 0), 0u)
      << answer;
}

TEST_P(PortWorker, AnswersPipelinedRequestsInOrder) {
  auto worker = ready_worker();
  // Written in one go, before reading any answer: the worker reads them in batches.
  std::vector<std::uint8_t> batch;
  constexpr int calls = 2000;
  for (int i = 0; i < calls; ++i) {
    const auto call = camlbeam::port::framed(
        etf::encode(term("{call, " + std::to_string(i) + ", identity, [{n, " + std::to_string(i) + "}]}")));
    batch.insert(batch.end(), call.begin(), call.end());
    if (i % 7 == 0) {  // a cast in between: no answer, order kept
      const auto cast = camlbeam::port::framed(etf::encode(term("{cast, identity, [x]}")));
      batch.insert(batch.end(), cast.begin(), cast.end());
    }
  }
  std::thread writer([&] { worker->write_all(batch); });
  for (int i = 0; i < calls; ++i) {
    ASSERT_EQ(worker->answer_to(std::to_string(i)), "{ok,{n," + std::to_string(i) + "}}");
  }
  writer.join();
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
  EXPECT_NE(worker->logs()[0].find("not valid ETF"), std::string::npos) << worker->logs()[0];
  EXPECT_NE(worker->logs()[1].find("{what,is,this}"), std::string::npos) << worker->logs()[1];
  EXPECT_NE(worker->logs()[2].find("undef"), std::string::npos) << worker->logs()[2];
}

TEST_P(PortWorker, HasTheWorkerGcDefaultsUnlessOcamlrunparamIsSet) {
  auto tuned = ready_worker();
  tuned->send("{call, r, gc_settings, []}");
  EXPECT_EQ(tuned->answer_to("r"), "{ok,{1048576,5000}}");
  auto chosen = ready_worker({{"OCAMLRUNPARAM", "s=300k"}});
  chosen->send("{call, r, gc_settings, []}");
  EXPECT_EQ(chosen->answer_to("r"), "{ok,{307200,500}}");
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
  EXPECT_EQ(answer.rfind("{error,{bad_request,<<\"the request could not be decoded: ", 0), 0u) << answer;
  EXPECT_NE(answer.find("depth"), std::string::npos) << answer;
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
  // No collection during the call (nothing was promoted), one right after it.
  EXPECT_EQ(after.first - before.first, 1);
  EXPECT_LT(after.second - before.second, 10'000);  // of the 350k words the call allocated
}

TEST_P(PortWorker, ExitsWithStatus2WhenAFrameAnnouncesTooMuch) {
  Worker worker(GetParam().executable);
  const std::uint8_t header[4] = {0xff, 0xff, 0xff, 0xff};
  worker.write_all(header);
  EXPECT_EQ(worker.wait_exit(), 2);
}

TEST_P(PortWorker, EndsARunningRequestSoonAfterErlangHungUp) {
  auto worker = ready_worker({{"CAMLBEAM_PORT_GRACE_MS", "100"}});
  worker->send("{call, r, spin, [30.0]}");
  std::this_thread::sleep_for(100ms);  // the worker is in the export now
  const auto start = std::chrono::steady_clock::now();
  worker->close_input();
  EXPECT_EQ(worker->wait_exit(5s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

INSTANTIATE_TEST_SUITE_P(Flavours, PortWorker,
                         testing::Values(Flavour{"native", CAMLBEAM_PORT_NATIVE, "porttest.cmxs", "native"},
                                         Flavour{"bytecode", CAMLBEAM_PORT_BYTECODE, "porttest.cma", "bytecode"},
                                         Flavour{"static", CAMLBEAM_PORT_STATIC, nullptr, "native"}),
                         [](const testing::TestParamInfo<Flavour>& param) { return std::string(param.param.name); });

// The exit status of the native worker started with `argument` (or none) and without its
// pipes, its stderr thrown away.
int exit_status_without_pipes(const char* argument) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(3);
    ::close(4);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(CAMLBEAM_PORT_NATIVE, CAMLBEAM_PORT_NATIVE, argument, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(PortWorkerStart, RefusesToRunWithoutItsPipes) { EXPECT_EQ(exit_status_without_pipes(nullptr), 64); }

TEST(PortWorkerStart, RefusesBadArgumentsAndAnswersHelpAndVersion) {
  EXPECT_EQ(exit_status_without_pipes("--max-reply-size=lots"), 64);
  EXPECT_EQ(exit_status_without_pipes("--max-request-size=0"), 64);
  EXPECT_EQ(exit_status_without_pipes("--no-such-option"), 64);
  EXPECT_EQ(exit_status_without_pipes("stray"), 64);
  EXPECT_EQ(exit_status_without_pipes("--help"), 0);
  EXPECT_EQ(exit_status_without_pipes("--version"), 0);
}

}  // namespace
