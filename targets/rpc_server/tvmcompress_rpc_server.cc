// tvmcompress_rpc_server: a TVM RPC server without Python, for foreign CPUs (aarch64 under qemu-user).
//
// It registers with a TVM RPC tracker (`python -m tvm.exec.rpc_tracker`) under a key, waits for a client the
// tracker sends its way, and serves each session with the TVM runtime's own RPC endpoint (`rpc.ServerLoop`) in
// a forked child, so a candidate that crashes ends only its own session. MetaSchedule's RPCRunner and
// `tvm.rpc` clients then upload a library, load it, fill random arguments and time it here.
//
// Built by tvmcompress.targets.qemu_rpc against the cached TVM runtime of the architecture (no Python):
//   tvmcompress_rpc_server --tracker HOST:PORT --key KEY [--host ADDR] [--port P] [--port-end E]
//                          [--custom-addr ADDR] [--work-dir DIR]
// --port 0 binds an ephemeral port. Progress lines go to stdout ("listening on ...", "registered ...",
// "session ..."); errors to stderr. Exit codes: 0 after SIGTERM/SIGINT, 1 a runtime failure (tracker gone,
// cannot bind), 2 bad usage.
//
// The wire protocol is TVM's (python/tvm/rpc/base.py, server.py, tracker.py in the installed TVM):
//  - tracker: send the int32 RPC_TRACKER_MAGIC, read it back; then every message in either direction is an
//    int32 byte count and a JSON text. The server sends [UPDATE_INFO, {"key": "server:KEY", "addr": [a, port]}]
//    once, [PUT, KEY, [port, MATCHKEY], addr] for each session it offers, and [GET_PENDING_MATCHKEYS] to learn
//    whether a client took the offer. MATCHKEY must be "KEY:<random>": the tracker splits it at the last ':'.
//  - client: sends RPC_MAGIC, an int32 length and "client:MATCHKEY [-timeout=SECONDS]"; the server answers
//    RPC_CODE_SUCCESS, an int32 length and "server:KEY", or RPC_CODE_MISMATCH and closes.
// All integers are little-endian.
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

namespace ffi = tvm::ffi;

namespace {

constexpr int32_t kRpcMagic = 0xFF271;
constexpr int32_t kTrackerMagic = 0x2F271;
constexpr int32_t kRpcCodeSuccess = kRpcMagic + 0;
constexpr int32_t kRpcCodeMismatch = kRpcMagic + 2;
enum TrackerCode { kSuccess = 0, kPut = 3, kUpdateInfo = 5, kGetPendingMatchkeys = 7 };

// Every this many milliseconds without a client, ask the tracker whether our offer was taken.
constexpr int kPingPeriodMs = 2000;
// A taken offer whose client has not connected after this long is replaced by a fresh one (as TVM's server).
constexpr int kUnmatchedTimeoutMs = 6000;
// How long a lost tracker may stay unreachable before the server gives up.
constexpr int kTrackerRetryS = 60;
constexpr int32_t kMaxMessageBytes = 1 << 20;
constexpr int kHandshakeTimeoutS = 10;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A peer (the tracker, or a client in its handshake) hung up, timed out or sent garbage.
struct PeerLost : std::runtime_error {
  using std::runtime_error::runtime_error;
};

volatile sig_atomic_t g_stop = 0;
// The session directory of this process; set in the forked child before it serves.
std::string g_workdir;  // NOLINT

void OnStopSignal(int) { g_stop = 1; }

struct Options {
  std::string tracker_host;
  int tracker_port = 0;
  std::string key;
  std::string host = "0.0.0.0";
  int port = 9090;
  int port_end = 9199;
  std::optional<std::string> custom_addr;
  std::string work_dir = "/tmp";
};

// Keys and addresses go into JSON and the handshake verbatim: keep them to characters that need no escaping.
bool IsPlainToken(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == ':')) return false;
  }
  return true;
}

int ParsePort(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 0 || value > 65535) {
    throw UsageError(flag + " must be a port number, got '" + text + "'");
  }
  return static_cast<int>(value);
}

Options ParseOptions(int argc, char** argv) {
  Options opts;
  bool port_end_given = false;
  for (int pos = 1; pos < argc; pos += 2) {
    std::string flag = argv[pos];
    if (pos + 1 >= argc) throw UsageError(flag + " needs a value");
    std::string value = argv[pos + 1];
    if (flag == "--tracker") {
      size_t colon = value.rfind(':');
      if (colon == std::string::npos || colon == 0) throw UsageError("--tracker must be HOST:PORT, got '" + value + "'");
      opts.tracker_host = value.substr(0, colon);
      opts.tracker_port = ParsePort("--tracker", value.substr(colon + 1));
    } else if (flag == "--key") {
      opts.key = value;
    } else if (flag == "--host") {
      opts.host = value;
    } else if (flag == "--port") {
      opts.port = ParsePort(flag, value);
    } else if (flag == "--port-end") {
      opts.port_end = ParsePort(flag, value);
      port_end_given = true;
    } else if (flag == "--custom-addr") {
      opts.custom_addr = value;
    } else if (flag == "--work-dir") {
      opts.work_dir = value;
    } else {
      throw UsageError("unknown flag " + flag);
    }
  }
  if (opts.tracker_host.empty() || opts.key.empty()) {
    throw UsageError(
        "usage: tvmcompress_rpc_server --tracker HOST:PORT --key KEY [--host ADDR] [--port P] [--port-end E] "
        "[--custom-addr ADDR] [--work-dir DIR]");
  }
  if (!IsPlainToken(opts.key) || opts.key.find(':') != std::string::npos) {
    throw UsageError("--key may hold letters, digits, '.', '-' and '_' only, got '" + opts.key + "'");
  }
  if (opts.custom_addr && !IsPlainToken(*opts.custom_addr)) {
    throw UsageError("--custom-addr must be a host name or IP address, got '" + *opts.custom_addr + "'");
  }
  if (!port_end_given) opts.port_end = std::max(opts.port_end, opts.port + 1);
  if (opts.port != 0 && opts.port_end <= opts.port) throw UsageError("--port-end must be above --port");
  return opts;
}

// ---- sockets --------------------------------------------------------------------------------------------

void SendAll(int fd, const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t sent = send(fd, bytes, size, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) throw PeerLost(std::string("send failed: ") + std::strerror(errno));
    bytes += sent;
    size -= static_cast<size_t>(sent);
  }
}

void RecvAll(int fd, void* data, size_t size) {
  char* bytes = static_cast<char*>(data);
  while (size > 0) {
    ssize_t got = recv(fd, bytes, size, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw PeerLost(got == 0 ? "connection closed" : std::string("recv failed: ") + std::strerror(errno));
    bytes += got;
    size -= static_cast<size_t>(got);
  }
}

void SendInt32(int fd, int32_t value) {
  uint32_t bits = static_cast<uint32_t>(value);
  unsigned char le[4] = {static_cast<unsigned char>(bits), static_cast<unsigned char>(bits >> 8),
                         static_cast<unsigned char>(bits >> 16), static_cast<unsigned char>(bits >> 24)};
  SendAll(fd, le, 4);
}

int32_t RecvInt32(int fd) {
  unsigned char le[4];
  RecvAll(fd, le, 4);
  return static_cast<int32_t>(le[0] | (le[1] << 8) | (le[2] << 16) | (static_cast<uint32_t>(le[3]) << 24));
}

void SetRecvTimeout(int fd, int seconds) {
  timeval limit{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
}

// A connected TCP socket to host:port, or -1.
int ConnectTo(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  return fd;
}

// A listening socket on the first free port of [port, port_end) (port 0: an ephemeral one); sets *bound.
int Listen(const Options& opts, int* bound) {
  int first = opts.port, last = opts.port == 0 ? 1 : opts.port_end;
  int error = 0;
  for (int port = first; port < last; ++port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* found = nullptr;
    int rc = getaddrinfo(opts.host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) throw UsageError("--host " + opts.host + ": " + gai_strerror(rc));
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    int one = 1;
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
              bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 1) == 0;
    error = errno;
    freeaddrinfo(found);
    if (ok) {
      sockaddr_storage addr{};
      socklen_t len = sizeof(addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      *bound = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
      return fd;
    }
    if (fd >= 0) close(fd);
    if (error != EADDRINUSE) break;
  }
  throw std::runtime_error("cannot listen on " + opts.host + " ports [" + std::to_string(first) + ", " +
                           std::to_string(last) + "): " + std::strerror(error));
}

// ---- tracker --------------------------------------------------------------------------------------------

std::string Quote(const std::string& token) { return "\"" + token + "\""; }  // tokens need no escaping

class Tracker {
 public:
  Tracker(const Options& opts, int port) : opts_(opts), port_(port) {}
  ~Tracker() { Close(); }

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // Connects (retrying for kTrackerRetryS while the tracker refuses) and reports this server.
  void Connect() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kTrackerRetryS);
    while ((fd_ = ConnectTo(opts_.tracker_host, opts_.tracker_port)) < 0) {
      if (g_stop) return;
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("cannot reach the RPC tracker at " + opts_.tracker_host + ":" +
                                 std::to_string(opts_.tracker_port) + " for " + std::to_string(kTrackerRetryS) +
                                 " s");
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    SendInt32(fd_, kTrackerMagic);
    if (RecvInt32(fd_) != kTrackerMagic) {
      throw std::runtime_error(opts_.tracker_host + ":" + std::to_string(opts_.tracker_port) + " is not an RPC tracker");
    }
    std::string addr = opts_.custom_addr ? Quote(*opts_.custom_addr) : "null";
    Call("[" + std::to_string(kUpdateInfo) + ", {\"key\": " + Quote("server:" + opts_.key) + ", \"addr\": [" + addr +
         ", " + std::to_string(port_) + "]}]");
  }

  // Offers one session under a fresh match key; returns the key a client must present.
  std::string Offer() {
    std::string matchkey = opts_.key + ":" + std::to_string(rng_());
    std::string addr = opts_.custom_addr ? Quote(*opts_.custom_addr) : "null";
    Call("[" + std::to_string(kPut) + ", " + Quote(opts_.key) + ", [" + std::to_string(port_) + ", " +
         Quote(matchkey) + "], " + addr + "]");
    return matchkey;
  }

  // Whether `matchkey` still waits in the tracker's queue (false: a client took it, or it was dropped).
  bool IsPending(const std::string& matchkey) {
    Send("[" + std::to_string(kGetPendingMatchkeys) + "]");
    return Recv().find(Quote(matchkey)) != std::string::npos;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  void Send(const std::string& json) {
    SendInt32(fd_, static_cast<int32_t>(json.size()));
    SendAll(fd_, json.data(), json.size());
  }

  std::string Recv() {
    int32_t size = RecvInt32(fd_);
    if (size <= 0 || size > kMaxMessageBytes) throw PeerLost("bad tracker message size " + std::to_string(size));
    std::string text(static_cast<size_t>(size), '\0');
    RecvAll(fd_, text.data(), text.size());
    return text;
  }

  void Call(const std::string& json) {
    Send(json);
    std::string reply = Recv();
    if (reply != std::to_string(kSuccess)) throw PeerLost("the tracker answered " + reply + " to " + json);
  }

  const Options& opts_;
  int port_;
  int fd_ = -1;
  std::mt19937_64 rng_{std::random_device{}() ^ (static_cast<uint64_t>(getpid()) << 32)};
};

// ---- sessions -------------------------------------------------------------------------------------------

// Reads a client's handshake on `conn`; returns its options ("-timeout=S" -> seconds), or nullopt after
// refusing a client whose match key is not `matchkey`.
std::optional<double> AcceptHandshake(int conn, const std::string& matchkey, const std::string& key) {
  if (RecvInt32(conn) != kRpcMagic) return std::nullopt;
  int32_t length = RecvInt32(conn);
  if (length <= 0 || length > 4096) return std::nullopt;
  std::string header(static_cast<size_t>(length), '\0');
  RecvAll(conn, header.data(), header.size());
  size_t space = header.find(' ');
  std::string who = header.substr(0, space);
  if (who != "client:" + matchkey) {
    SendInt32(conn, kRpcCodeMismatch);
    std::cout << "refused a client with key '" << who << "'" << std::endl;
    return std::nullopt;
  }
  double timeout_s = 0;  // 0: no limit
  const std::string option = " -timeout=";
  size_t at = header.find(option);
  if (at != std::string::npos) timeout_s = std::atof(header.c_str() + at + option.size());
  std::string answer = "server:" + key;
  SendInt32(conn, kRpcCodeSuccess);
  SendInt32(conn, static_cast<int32_t>(answer.size()));
  SendAll(conn, answer.data(), answer.size());
  return timeout_s;
}

void RemoveTree(const std::string& path) {
  if (DIR* dir = opendir(path.c_str())) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      std::string child = path + "/" + name;
      struct stat info {};
      if (lstat(child.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
        RemoveTree(child);
      } else {
        unlink(child.c_str());
      }
    }
    closedir(dir);
  }
  rmdir(path.c_str());
}

// Serves one client on `conn` in a child process with a fresh working directory, waiting at most
// `timeout_s` (0: no limit). A crash in the child (a bad candidate) ends only this session.
void Serve(int conn, double timeout_s, const Options& opts, int listen_fd, int tracker_fd) {
  std::string pattern = opts.work_dir + "/tvmcompress-rpc-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::cerr << "cannot create a session directory in " << opts.work_dir << ": " << std::strerror(errno) << std::endl;
    return;
  }
  std::string session_dir = pattern;
  pid_t child = fork();
  if (child < 0) {
    std::cerr << "fork failed: " << std::strerror(errno) << std::endl;
    RemoveTree(session_dir);
    return;
  }
  if (child == 0) {
    // The child dies with the server, so a stopped server leaves no session behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    close(listen_fd);
    if (tracker_fd >= 0) close(tracker_fd);
    g_workdir = session_dir;
    if (chdir(session_dir.c_str()) != 0) _exit(1);
    try {
      ffi::Function::GetGlobalRequired("rpc.ServerLoop")(static_cast<int64_t>(conn));
    } catch (const ffi::Error& err) {
      std::cerr << "session failed: " << err.kind() << ": " << err.message() << std::endl;
      _exit(1);
    }
    _exit(0);
  }
  auto start = std::chrono::steady_clock::now();
  int status = 0;
  bool timed_out = false;
  while (waitpid(child, &status, WNOHANG) == 0) {
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (g_stop || (timeout_s > 0 && elapsed > timeout_s)) {
      timed_out = !g_stop;
      if (timed_out) {
        // Tell the client why its session ends, as TVM's Python server does.
        ffi::Function::GetGlobalRequired("rpc.ReturnException")(
            static_cast<int64_t>(conn), ffi::String("RPCSessionTimeoutError: the " + std::to_string(timeout_s) +
                                                    " s session has expired; raise session_timeout"));
      }
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  close(conn);
  RemoveTree(session_dir);
  if (timed_out) {
    std::cout << "session timed out after " << timeout_s << " s" << std::endl;
  } else if (WIFSIGNALED(status)) {
    std::cout << "session ended by signal " << WTERMSIG(status) << std::endl;
  } else {
    std::cout << "session done (exit " << WEXITSTATUS(status) << ")" << std::endl;
  }
}

// The functions TVM's RPC client calls on a server and the runtime leaves to the server to define.
void RegisterServerFunctions() {
  // upload/download/remove (in the runtime) resolve their file names through this one.
  ffi::Function::SetGlobal(
      "tvm.rpc.server.workpath",
      ffi::Function::FromTyped([](ffi::String name) -> ffi::String {
        return ffi::String(g_workdir + "/" + std::string(name));
      }),
      true);
  ffi::Function::SetGlobal(
      "tvm.rpc.server.load_module",
      ffi::Function::FromTyped([](ffi::String name) -> ffi::Module {
        return ffi::Module::LoadFromFile(ffi::String(g_workdir + "/" + std::string(name)));
      }),
      true);
}

void CheckRuntime() {
  // MetaSchedule's RPCRunner fills arguments with this one (libtvm_runtime_extra in the wheels).
  for (const char* name : {"rpc.ServerLoop", "rpc.ReturnException", "tvm.contrib.random.random_fill_for_measure"}) {
    if (!ffi::Function::GetGlobal(name).has_value()) {
      throw std::runtime_error(std::string("the TVM runtime lacks ") + name +
                               ": link a runtime built with RPC and random support");
    }
  }
}

int Run(int argc, char** argv) {
  Options opts = ParseOptions(argc, argv);
  CheckRuntime();
  RegisterServerFunctions();

  struct sigaction action {};
  action.sa_handler = OnStopSignal;  // no SA_RESTART: poll() returns EINTR and the loop sees g_stop
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);

  int port = 0;
  int listen_fd = Listen(opts, &port);
  std::cout << "listening on " << opts.host << ":" << port << std::endl;
  Tracker tracker(opts, port);
  bool announced = false;
  while (!g_stop) {
    try {
      if (!tracker.connected()) {
        tracker.Connect();
        if (g_stop) break;
      }
      std::string matchkey = tracker.Offer();
      if (!announced) {
        std::cout << "registered key " << opts.key << " with the tracker at " << opts.tracker_host << ":"
                  << opts.tracker_port << std::endl;
        announced = true;
      }
      int unmatched_ms = 0;
      while (!g_stop) {
        pollfd waiting{listen_fd, POLLIN, 0};
        int ready = poll(&waiting, 1, kPingPeriodMs);
        if (ready < 0) {
          if (errno == EINTR) continue;
          throw std::runtime_error(std::string("poll failed: ") + std::strerror(errno));
        }
        if (ready == 0) {
          unmatched_ms = tracker.IsPending(matchkey) ? 0 : unmatched_ms + kPingPeriodMs;
          if (unmatched_ms > kUnmatchedTimeoutMs) {
            std::cout << "the offered session was not used; offering a new one" << std::endl;
            matchkey = tracker.Offer();
            unmatched_ms = 0;
          }
          continue;
        }
        int conn = accept(listen_fd, nullptr, nullptr);
        if (conn < 0) continue;
        // A peer that connects and says nothing must not block the server: bound the handshake's reads.
        SetRecvTimeout(conn, kHandshakeTimeoutS);
        std::optional<double> timeout_s;
        try {
          timeout_s = AcceptHandshake(conn, matchkey, opts.key);
        } catch (const PeerLost& err) {
          std::cout << "dropped a client during the handshake: " << err.what() << std::endl;
          timeout_s = std::nullopt;
        }
        SetRecvTimeout(conn, 0);  // the session itself may idle as long as the client likes
        if (!timeout_s) {
          close(conn);
          continue;
        }
        std::cout << "session started" << std::endl;
        Serve(conn, *timeout_s, opts, listen_fd, tracker.fd());
        break;  // offer the next session
      }
    } catch (const PeerLost& err) {
      std::cerr << "lost the tracker (" << err.what() << "); reconnecting" << std::endl;
      tracker.Close();
    }
  }
  close(listen_fd);
  std::cout << "stopped" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const UsageError& err) {
    std::cerr << "usage-error: " << err.what() << std::endl;
    return 2;
  } catch (const ffi::Error& err) {
    std::cerr << "tvm-error " << err.kind() << ": " << err.message() << std::endl;
    return 1;
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << std::endl;
    return 1;
  }
}
