// The ssl_dist_optfile reader: the Erlang terms such a file holds (atoms, strings, integers,
// lists, tuples; `%` comments), one term and a dot, then the options we implement. Anything
// else is an error value: a security option must never be dropped in silence.
#include <camlbeam/dist/tls.hpp>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

namespace camlbeam::dist {

namespace {

// A bound on nesting: the options are two lists deep; a hostile file must not recurse far.
constexpr int max_depth = 16;
// The file is a few hundred bytes; a bigger one is not an optfile.
constexpr std::size_t max_file_bytes = 1 << 20;

struct OptTerm {
  enum class Kind : std::uint8_t { atom, string, integer, list, tuple };
  Kind kind = Kind::atom;
  std::string text;  // atom, string, integer (its digits)
  std::vector<OptTerm> items;
  int line = 0;
};

class TermParser {
 public:
  explicit TermParser(std::string_view text) : text_(text) {}

  // The one term of the file, followed by a dot and nothing but blanks and comments.
  std::variant<OptTerm, Error> parse_file() {
    auto term = parse_term(0);
    if (auto* error = std::get_if<Error>(&term)) return *error;
    skip_blanks();
    if (at_ >= text_.size() || text_[at_] != '.') return fail("a '.' after the term");
    ++at_;
    skip_blanks();
    if (at_ < text_.size()) return fail("nothing after the term's '.'");
    return term;
  }

 private:
  Error fail(const std::string& expected) const {
    std::string seen = at_ < text_.size() ? "'" + std::string(1, text_[at_]) + "'" : "the end of the file";
    return Error{Errc::bad_optfile, "line " + std::to_string(line_) + ": expected " + expected + ", found " + seen};
  }

  void skip_blanks() {
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (c == '%') {
        while (at_ < text_.size() && text_[at_] != '\n') ++at_;
      } else if (std::isspace(static_cast<unsigned char>(c))) {
        if (c == '\n') ++line_;
        ++at_;
      } else {
        return;
      }
    }
  }

  std::variant<OptTerm, Error> parse_term(int depth) {
    if (depth > max_depth) return fail("terms nested at most " + std::to_string(max_depth) + " deep");
    skip_blanks();
    if (at_ >= text_.size()) return fail("a term");
    OptTerm term;
    term.line = line_;
    const char c = text_[at_];
    if (c == '[' || c == '{') {
      term.kind = c == '[' ? OptTerm::Kind::list : OptTerm::Kind::tuple;
      const char close = c == '[' ? ']' : '}';
      ++at_;
      skip_blanks();
      if (at_ < text_.size() && text_[at_] == close) {
        ++at_;
        return term;
      }
      for (;;) {
        auto item = parse_term(depth + 1);
        if (auto* error = std::get_if<Error>(&item)) return *error;
        term.items.push_back(std::move(std::get<OptTerm>(item)));
        skip_blanks();
        if (at_ < text_.size() && text_[at_] == ',') {
          ++at_;
          continue;
        }
        if (at_ < text_.size() && text_[at_] == close) {
          ++at_;
          return term;
        }
        return fail(std::string("',' or '") + close + "'");
      }
    }
    if (c == '"' || c == '\'') {
      term.kind = c == '"' ? OptTerm::Kind::string : OptTerm::Kind::atom;
      ++at_;
      for (;;) {
        if (at_ >= text_.size() || text_[at_] == '\n') return fail(std::string("the closing ") + c);
        char ch = text_[at_++];
        if (ch == c) return term;
        if (ch == '\\') {
          if (at_ >= text_.size()) return fail("an escaped character");
          const char escaped = text_[at_++];
          switch (escaped) {
            case '\\': case '"': case '\'': ch = escaped; break;
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            default: --at_; return fail("one of the escapes \\\\ \\\" \\' \\n \\t");
          }
        }
        term.text += ch;
      }
    }
    if (std::islower(static_cast<unsigned char>(c))) {
      term.kind = OptTerm::Kind::atom;
      while (at_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[at_])) || text_[at_] == '_' ||
                                    text_[at_] == '@')) {
        term.text += text_[at_++];
      }
      return term;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      term.kind = OptTerm::Kind::integer;
      while (at_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[at_]))) term.text += text_[at_++];
      return term;
    }
    return fail("an atom, a string, an integer, a list or a tuple");
  }

  std::string_view text_;
  std::size_t at_ = 0;
  int line_ = 1;
};

std::string show(const OptTerm& t) {
  switch (t.kind) {
    case OptTerm::Kind::atom: return t.text;
    case OptTerm::Kind::string: return "\"" + t.text + "\"";
    case OptTerm::Kind::integer: return t.text;
    case OptTerm::Kind::list:
    case OptTerm::Kind::tuple: {
      std::string out(1, t.kind == OptTerm::Kind::list ? '[' : '{');
      for (std::size_t i = 0; i < t.items.size(); ++i) out += (i ? "," : "") + show(t.items[i]);
      return out + (t.kind == OptTerm::Kind::list ? ']' : '}');
    }
  }
  return {};
}

bool is_pair(const OptTerm& t) {
  return t.kind == OptTerm::Kind::tuple && t.items.size() == 2 && t.items[0].kind == OptTerm::Kind::atom;
}

Error bad(const OptTerm& t, const std::string& what) {
  return Error{Errc::bad_optfile, "line " + std::to_string(t.line) + ": " + what + ": " + show(t)};
}

// One role's option list into `out`; the first problem is returned.
std::optional<Error> read_role(const OptTerm& list, bool server, TlsRoleOptions& out) {
  const std::string role = server ? "server" : "client";
  if (list.kind != OptTerm::Kind::list) return bad(list, role + "'s options are not a list");
  std::set<std::string> seen;
  for (const OptTerm& option : list.items) {
    if (!is_pair(option)) return bad(option, role + ": not an {Option, Value} pair");
    const std::string& name = option.items[0].text;
    const OptTerm& value = option.items[1];
    if (!seen.insert(name).second) return bad(option, role + ": " + name + " given twice");
    const auto string_value = [&](std::string& field) -> std::optional<Error> {
      if (value.kind != OptTerm::Kind::string || value.text.empty()) return bad(option, role + ": a file name expected");
      field = value.text;
      return std::nullopt;
    };
    const auto is_atom = [&](std::string_view a) { return value.kind == OptTerm::Kind::atom && value.text == a; };
    if (name == "certfile") {
      if (auto e = string_value(out.certfile)) return e;
    } else if (name == "keyfile") {
      if (auto e = string_value(out.keyfile)) return e;
    } else if (name == "cacertfile") {
      if (auto e = string_value(out.cacertfile)) return e;
    } else if (name == "verify") {
      if (!is_atom("verify_peer") && !is_atom("verify_none")) return bad(option, role + ": verify_peer or verify_none expected");
      out.verify_peer = is_atom("verify_peer");
    } else if (name == "fail_if_no_peer_cert" && server) {
      if (!is_atom("true") && !is_atom("false")) return bad(option, role + ": true or false expected");
      out.fail_if_no_peer_cert = is_atom("true");
    } else if (name == "server_name_indication" && !server) {
      if (is_atom("disable")) {
        out.check_host = false;
      } else if (value.kind == OptTerm::Kind::string && !value.text.empty()) {
        out.server_name = value.text;
      } else {
        return bad(option, role + ": disable or a host name expected");
      }
    } else {
      return Error{Errc::unsupported_tls_option,
                   "line " + std::to_string(option.line) + ": " + role + " option " + show(option)};
    }
  }
  if (server && out.certfile.empty()) return bad(list, "server: no certfile (a TLS server needs a certificate)");
  if (out.fail_if_no_peer_cert && !out.verify_peer) {
    return bad(list, role + ": fail_if_no_peer_cert needs {verify, verify_peer}");
  }
  if (out.verify_peer && out.cacertfile.empty()) {
    return bad(list, role + ": verify_peer needs a cacertfile (no system CAs are used)");
  }
  return std::nullopt;
}

}  // namespace

std::variant<TlsOptions, Error> parse_ssl_dist_optfile(std::string_view text) {
  auto parsed = TermParser(text).parse_file();
  if (auto* error = std::get_if<Error>(&parsed)) return *error;
  const OptTerm& top = std::get<OptTerm>(parsed);
  if (top.kind != OptTerm::Kind::list) return bad(top, "the file's term is not a list");
  TlsOptions options;
  bool have_server = false;
  bool have_client = false;
  for (const OptTerm& entry : top.items) {
    if (!is_pair(entry)) return bad(entry, "not a {server, Options} or {client, Options} pair");
    const std::string& role = entry.items[0].text;
    if (role != "server" && role != "client") {
      return Error{Errc::unsupported_tls_option, "line " + std::to_string(entry.line) + ": " + show(entry)};
    }
    bool& have = role == "server" ? have_server : have_client;
    if (have) return bad(entry, role + " given twice");
    have = true;
    if (auto e = read_role(entry.items[1], role == "server", role == "server" ? options.server : options.client)) {
      return *e;
    }
  }
  if (!have_server) return Error{Errc::bad_optfile, "no {server, Options}: we accept connections"};
  return options;
}

std::variant<TlsOptions, Error> read_ssl_dist_optfile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::bad_optfile, "cannot read " + path};
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Error{Errc::bad_optfile, "cannot read " + path};
  if (text.str().size() > max_file_bytes) return Error{Errc::bad_optfile, path + " is over 1 MB"};
  auto result = parse_ssl_dist_optfile(text.str());
  if (auto* error = std::get_if<Error>(&result)) error->detail = path + ": " + error->detail;
  return result;
}

}  // namespace camlbeam::dist
