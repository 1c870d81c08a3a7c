// Erlang-syntax text: Term::to_string and parse_term, both iterative.
#include <camlbeam/etf/text.hpp>

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/error.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>
#include <variant>

namespace camlbeam::etf {

// ---------------------------------------------------------------------------------------
// Printing.

namespace {

bool is_reserved_word(std::string_view s) {
  static constexpr std::string_view words[] = {
      "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor",
      "case", "catch", "cond", "div", "end", "fun", "if", "let", "not", "of",
      "or", "orelse", "receive", "rem", "try", "when", "xor", "maybe", "else"};
  return std::find(std::begin(words), std::end(words), s) != std::end(words);
}

// The code point at s[i] (valid UTF-8 assumed: atoms are validated); advances i.
std::uint32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto c = static_cast<std::uint8_t>(s[i]);
  const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  std::uint32_t v = len == 1 ? c : (c & (0xFFu >> (len + 1)));
  for (std::size_t j = 1; j < len && i + j < s.size(); ++j) v = (v << 6) | (static_cast<std::uint8_t>(s[i + j]) & 0x3F);
  i += len;
  return v;
}

// Erlang's unquoted atoms: a lowercase letter, then letters, digits, _ and @, all from
// Latin-1 (so 'café' prints as café), and not a reserved word.
bool is_bare_atom(std::string_view s) {
  auto lower = [](std::uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7); };
  auto upper = [](std::uint32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7); };
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size();) {
    const bool first = i == 0;
    const std::uint32_t c = next_code_point(s, i);
    const bool ok = first ? lower(c) : lower(c) || upper(c) || (c >= '0' && c <= '9') || c == '_' || c == '@';
    if (!ok) return false;
  }
  return !is_reserved_word(s);
}

void append_escaped_char(std::string& out, std::uint32_t c, char quote) {
  switch (c) {
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    case '\v': out += "\\v"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case 27: out += "\\e"; return;
    case '\\': out += "\\\\"; return;
    default: break;
  }
  if (c == static_cast<std::uint32_t>(quote)) {
    out += '\\';
    out += quote;
  } else if (c < 32 || c == 127) {
    out += "\\x{";
    char buf[8];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, c, 16);
    (void)ec;
    out.append(buf, end);
    out += '}';
  } else if (c < 0x80) {
    out += static_cast<char>(c);
  } else {
    std::string utf8;
    const std::uint8_t latin1 = static_cast<std::uint8_t>(c);
    detail::latin1_to_utf8({&latin1, 1}, utf8);
    out += utf8;
  }
}

void append_atom(std::string& out, std::string_view name) {
  if (is_bare_atom(name)) {
    out += name;
    return;
  }
  out += '\'';
  for (char ch : name) {
    const auto c = static_cast<std::uint8_t>(ch);
    if (c >= 0x80) out += ch;  // UTF-8 passes through
    else append_escaped_char(out, c, '\'');
  }
  out += '\'';
}

void append_float(std::string& out, double d) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  (void)ec;
  std::string s(buf, end);
  // Erlang syntax needs a fraction ("1.0", "1.0e20") and writes no '+' in exponents.
  const auto e = s.find('e');
  std::string mantissa = s.substr(0, e), exponent = e == std::string::npos ? "" : s.substr(e + 1);
  if (mantissa.find('.') == std::string::npos) mantissa += ".0";
  out += mantissa;
  if (!exponent.empty()) {
    if (exponent[0] == '+') exponent.erase(0, 1);
    out += 'e';
    out += exponent;
  }
}

bool printable_latin1(std::uint32_t c) {
  return (c >= 32 && c <= 126) || (c >= 160 && c <= 255) || (c >= 8 && c <= 13) || c == 27;
}

// The byte values of a proper list that io_lib would print as a string, if it is one.
bool printable_list(const List& list, std::string& codes) {
  if (list.items.back().kind() != Kind::nil) return false;
  codes.clear();
  for (std::size_t i = 0; i + 1 < list.items.size(); ++i) {
    const auto* v = list.items[i].get_if<std::int64_t>();
    if (v == nullptr || *v < 0 || *v > 255 || !printable_latin1(static_cast<std::uint32_t>(*v))) return false;
    codes += static_cast<char>(*v);
  }
  return true;
}

void append_quoted_codes(std::string& out, std::span<const std::uint8_t> codes, char quote) {
  out += quote;
  for (std::uint8_t c : codes) append_escaped_char(out, c, quote);
  out += quote;
}

void append_bytes(std::string& out, std::span<const std::uint8_t> bytes, std::uint8_t bits_in_last) {
  out += "<<";
  const bool whole = bits_in_last == 8;
  if (whole && !bytes.empty() &&
      std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t c) { return printable_latin1(c); })) {
    append_quoted_codes(out, bytes, '"');
  } else {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (i != 0) out += ',';
      if (i + 1 == bytes.size() && !whole) {
        out += std::to_string(bytes[i] >> (8 - bits_in_last)) + ":" + std::to_string(bits_in_last);
      } else {
        out += std::to_string(bytes[i]);
      }
    }
  }
  out += ">>";
}

std::string big_to_decimal(const BigInteger& big) {
  // Repeated division of the little-endian magnitude by 10^9.
  std::vector<std::uint32_t> words;
  for (std::size_t i = big.magnitude.size(); i-- > 0;) {
    std::uint64_t carry = big.magnitude[i];
    for (auto& w : words) {
      const std::uint64_t v = std::uint64_t{w} * 256 + carry;
      w = static_cast<std::uint32_t>(v % 1'000'000'000);
      carry = v / 1'000'000'000;
    }
    while (carry != 0) {
      words.push_back(static_cast<std::uint32_t>(carry % 1'000'000'000));
      carry /= 1'000'000'000;
    }
  }
  std::string s = big.negative ? "-" : "";
  s += words.empty() ? "0" : std::to_string(words.back());
  for (std::size_t i = words.size() - 1; i-- > 0;) {
    std::string chunk = std::to_string(words[i]);
    s += std::string(9 - chunk.size(), '0') + chunk;
  }
  return s;
}

void append_pid(std::string& out, const Pid& p) {
  out += "#Pid<";
  append_atom(out, p.node);
  out += "." + std::to_string(p.id) + "." + std::to_string(p.serial) + "." + std::to_string(p.creation) + ">";
}

// What is left to print: a term, or literal text.
using PrintItem = std::variant<const Term*, std::string_view>;

}  // namespace

std::string Term::to_string() const {
  std::string out;
  std::string codes;
  std::vector<PrintItem> pending{this};
  auto push_sequence = [&pending](std::span<const Term> items, std::string_view separator) {
    for (std::size_t i = items.size(); i-- > 0;) {
      pending.emplace_back(&items[i]);
      if (i != 0) pending.emplace_back(separator);
    }
  };
  while (!pending.empty()) {
    PrintItem item = pending.back();
    pending.pop_back();
    if (auto* text = std::get_if<std::string_view>(&item)) {
      out += *text;
      continue;
    }
    const Term& t = *std::get<const Term*>(item);
    switch (t.kind()) {
      case Kind::integer: out += std::to_string(*t.get_if<std::int64_t>()); break;
      case Kind::big_integer: out += big_to_decimal(**t.get_if<Boxed<BigInteger>>()); break;
      case Kind::float64: append_float(out, *t.get_if<double>()); break;
      case Kind::atom: append_atom(out, t.get_if<Atom>()->name); break;
      case Kind::reference: {
        const auto& r = **t.get_if<Boxed<Reference>>();
        out += "#Ref<";
        append_atom(out, r.node);
        out += "." + std::to_string(r.creation);
        // Most significant word first, as Erlang prints #Ref<0.W2.W1.W0>.
        for (auto id = r.ids.rbegin(); id != r.ids.rend(); ++id) out += "." + std::to_string(*id);
        out += ">";
        break;
      }
      case Kind::fun: {
        const auto& f = **t.get_if<Boxed<Fun>>();
        out += "#Fun<";
        append_atom(out, f.module);
        out += "." + std::to_string(f.old_index) + "." + std::to_string(f.old_uniq) + ">";
        break;
      }
      case Kind::export_fun: {
        const auto& e = **t.get_if<Boxed<ExportFun>>();
        out += "fun ";
        append_atom(out, e.module);
        out += ':';
        append_atom(out, e.function);
        out += "/" + std::to_string(e.arity);
        break;
      }
      case Kind::port: {
        const auto& p = **t.get_if<Boxed<Port>>();
        out += "#Port<";
        append_atom(out, p.node);
        out += "." + std::to_string(p.id) + "." + std::to_string(p.creation) + ">";
        break;
      }
      case Kind::pid: append_pid(out, **t.get_if<Boxed<Pid>>()); break;
      case Kind::tuple:
        out += '{';
        pending.emplace_back("}");
        push_sequence(t.children(), ",");
        break;
      case Kind::map: {
        out += "#{";
        pending.emplace_back("}");
        const auto flat = t.children();
        for (std::size_t i = flat.size(); i >= 2; i -= 2) {
          pending.emplace_back(&flat[i - 1]);
          pending.emplace_back(" => ");
          pending.emplace_back(&flat[i - 2]);
          if (i != 2) pending.emplace_back(",");
        }
        break;
      }
      case Kind::nil: out += "[]"; break;
      case Kind::list: {
        const auto& list = *t.get_if<List>();
        if (printable_list(list, codes)) {
          append_quoted_codes(out, {reinterpret_cast<const std::uint8_t*>(codes.data()), codes.size()}, '"');
          break;
        }
        out += '[';
        pending.emplace_back("]");
        const auto items = std::span<const Term>(list.items);
        if (items.back().kind() != Kind::nil) {
          pending.emplace_back(&items.back());
          pending.emplace_back("|");
        }
        push_sequence(items.first(items.size() - 1), ",");
        break;
      }
      case Kind::binary: append_bytes(out, t.get_if<Binary>()->bytes, 8); break;
      case Kind::bitstring: {
        const auto& b = *t.get_if<Bitstring>();
        append_bytes(out, b.bytes, b.bits_in_last);
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Parsing.

ParseError::ParseError(std::size_t column, const std::string& what)
    : std::runtime_error("column " + std::to_string(column) + ": " + what), column_(column) {}

namespace {

class Parser {
 public:
  Parser(std::string_view text, std::size_t max_depth) : s_(text), max_depth_(max_depth) {}

  Term parse_all() {
    Term t = term();
    skip_space();
    if (peek() == '.') {  // a trailing full stop, as typed in the shell, is fine
      ++i_;
      skip_space();
    }
    if (i_ != s_.size()) fail("unexpected text after the term");
    return t;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw ParseError(i_ + 1, what); }

  char peek(std::size_t ahead = 0) const { return i_ + ahead < s_.size() ? s_[i_ + ahead] : '\0'; }
  bool at_end() const { return i_ >= s_.size(); }

  void skip_space() {
    while (!at_end()) {
      if (std::isspace(static_cast<unsigned char>(peek()))) {
        ++i_;
      } else if (peek() == '%') {
        while (!at_end() && peek() != '\n') ++i_;
      } else {
        break;
      }
    }
  }

  bool accept(std::string_view token) {
    skip_space();
    if (s_.substr(i_, token.size()) == token) {
      i_ += token.size();
      return true;
    }
    return false;
  }
  void expect(std::string_view token) {
    if (!accept(token)) fail("expected '" + std::string(token) + "'");
  }

  // An open container while its elements are read.
  struct Open {
    char kind;  // '{' tuple, '[' list, '#' map
    std::vector<Term> items;  // maps: key, value, key, value ...
    bool in_tail = false;     // lists: after '|'
    Term tail;
  };

  // One term, containers included, with an explicit stack: nesting costs heap, never
  // the C++ stack, so no text can overflow it.
  Term term() {
    std::vector<Open> open;
    for (;;) {
      // Opening brackets: push until a term starts that is not a container, or a
      // container closes at once.
      skip_space();
      std::optional<Term> value;
      if (peek() == '{' || peek() == '[' || (peek() == '#' && peek(1) == '{')) {
        if (open.size() >= max_depth_) fail("nesting deeper than " + std::to_string(max_depth_));
        const char kind = peek() == '#' ? '#' : peek();
        i_ += kind == '#' ? 2 : 1;
        open.push_back(Open{kind, {}, false, Term()});
        if (!accept(kind == '[' ? "]" : "}")) continue;
        value = close(open);
      } else {
        value = scalar();
      }
      // A finished term: add it to its container, closing every container it completes.
      for (;;) {
        if (open.empty()) return std::move(*value);
        Open& top = open.back();
        if (top.kind == '[' && top.in_tail) {
          top.tail = std::move(*value);
          expect("]");
          value = close(open);
          continue;
        }
        top.items.push_back(std::move(*value));
        if (top.kind == '#' && top.items.size() % 2 == 1) {
          expect("=>");
          break;
        }
        if (accept(",")) break;
        if (top.kind == '[' && accept("|")) {
          top.in_tail = true;
          break;
        }
        expect(top.kind == '[' ? "]" : "}");
        value = close(open);
      }
    }
  }

  // The term for the innermost open container, which is done.
  Term close(std::vector<Open>& open) {
    Open done = std::move(open.back());
    open.pop_back();
    if (done.kind == '{') return Term::tuple(std::move(done.items));
    if (done.kind == '[') return Term::list(std::move(done.items), std::move(done.tail));
    std::vector<std::pair<Term, Term>> entries;
    for (std::size_t k = 0; k + 1 < done.items.size(); k += 2)
      entries.emplace_back(std::move(done.items[k]), std::move(done.items[k + 1]));
    try {
      return Term::map(std::move(entries));
    } catch (const EncodeError& e) {
      fail(e.what());
    }
  }

  // Any term that is not a container.
  Term scalar() {
    const char c = peek();
    if (c == '"') return Term::list(string_codes());
    if (c == '\'') return Term::atom(quoted('\''));
    if (c == '<' && peek(1) == '<') return bits();
    if (c == '#') return special();
    if (c == '$' || c == '-' || c == '+' || std::isdigit(static_cast<unsigned char>(c))) return number();
    if (s_.substr(i_, 4) == "fun " || s_.substr(i_, 4) == "fun\t") return export_fun();
    if (std::islower(static_cast<unsigned char>(c)) || static_cast<unsigned char>(c) >= 0x80) {
      const std::size_t start = i_;
      std::string word = bare_word();
      if (!is_bare_atom(word)) {
        i_ = start;
        fail("unexpected character (atoms other than Latin-1 words need quotes)");
      }
      return Term::atom(word);
    }
    if (at_end()) fail("unexpected end of text");
    fail(std::string("unexpected character '") + c + "'");
  }

  // Letters, digits, _ and @; UTF-8 sequences pass (Latin-1 letters are atom characters).
  std::string bare_word() {
    const std::size_t start = i_;
    while (!at_end() && (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '_' || peek() == '@' ||
                         static_cast<unsigned char>(peek()) >= 0x80))
      ++i_;
    return std::string(s_.substr(start, i_ - start));
  }

  std::string atom_text() {
    skip_space();
    if (peek() == '\'') return quoted('\'');
    std::string word = bare_word();
    if (!is_bare_atom(word)) fail("expected an atom");
    return word;
  }

  // UTF-8 text between quotes, with Erlang escapes; returns UTF-8.
  std::string quoted(char quote) {
    ++i_;
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated quoted text");
      const char c = s_[i_++];
      if (c == quote) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      append_code_point(out, escape());
    }
  }

  std::uint32_t escape() {
    if (at_end()) fail("unterminated escape");
    const char c = s_[i_++];
    switch (c) {
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'v': return '\v';
      case 'b': return '\b';
      case 'f': return '\f';
      case 'e': return 27;
      case 's': return ' ';
      case 'd': return 127;
      case 'x': {
        const bool braces = peek() == '{';
        if (braces) ++i_;
        const std::size_t start = i_;
        while (std::isxdigit(static_cast<unsigned char>(peek())) && (braces || i_ - start < 2)) ++i_;
        std::uint32_t v = 0;
        if (std::from_chars(s_.data() + start, s_.data() + i_, v, 16).ec != std::errc() || v > 0x10FFFF)
          fail("bad \\x escape");
        if (braces && !accept("}")) fail("expected '}' in \\x{...}");
        return v;
      }
      default:
        if (c >= '0' && c <= '7') {
          std::uint32_t v = static_cast<std::uint32_t>(c - '0');
          for (int k = 0; k < 2 && peek() >= '0' && peek() <= '7'; ++k) v = v * 8 + static_cast<std::uint32_t>(s_[i_++] - '0');
          return v;
        }
        return static_cast<std::uint8_t>(c);
    }
  }

  static void append_code_point(std::string& out, std::uint32_t c) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }

  // One UTF-8 encoded character of the text, validated.
  std::uint32_t code_point() {
    const auto c = static_cast<std::uint8_t>(s_[i_]);
    const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i_ + len > s_.size() ||
        detail::utf8_length({reinterpret_cast<const std::uint8_t*>(s_.data() + i_), len}) != 1)
      fail("invalid UTF-8");
    return next_code_point(s_, i_);
  }

  // Code points of a "string", as a list of integers.
  std::vector<Term> string_codes() {
    const std::string utf8 = quoted('"');
    if (detail::utf8_length({reinterpret_cast<const std::uint8_t*>(utf8.data()), utf8.size()}) < 0)
      fail("invalid UTF-8 in a string");
    std::vector<Term> codes;
    for (std::size_t k = 0; k < utf8.size();) codes.push_back(Term::integer(next_code_point(utf8, k)));
    return codes;
  }

  Term bits() {
    expect("<<");
    std::vector<std::uint8_t> bytes;
    std::uint8_t bits_in_last = 8;
    if (accept(">>")) return Term::binary(std::span<const std::uint8_t>(bytes));
    do {
      if (bits_in_last != 8) fail("only the last segment may have a bit size");
      skip_space();
      if (peek() == '"') {
        for (const Term& code : string_codes()) bytes.push_back(static_cast<std::uint8_t>(*code.as_int64()));
        continue;
      }
      const Term value = number();
      const auto v = value.as_int64();
      if (!v || *v < 0 || *v > 255) fail("a binary segment must be an integer 0..255");
      std::uint8_t segment = static_cast<std::uint8_t>(*v);
      if (accept(":")) {
        const auto size = number().as_int64();
        if (!size || *size < 1 || *size > 8) fail("segment size must be 1..8 bits");
        bits_in_last = static_cast<std::uint8_t>(*size);
        if (bits_in_last < 8) {
          if (segment >> bits_in_last) fail("segment value does not fit its size");
          segment = static_cast<std::uint8_t>(segment << (8 - bits_in_last));
        }
      }
      bytes.push_back(segment);
    } while (accept(","));
    expect(">>");
    return Term::bitstring(std::move(bytes), bits_in_last);
  }

  Term number() {
    skip_space();
    if (peek() == '$') {
      ++i_;
      if (at_end()) fail("expected a character after $");
      if (peek() == '\\') {
        ++i_;
        return Term::integer(escape());
      }
      return Term::integer(code_point());
    }
    const std::size_t start = i_;
    bool negative = false;
    if (peek() == '-' || peek() == '+') negative = s_[i_++] == '-';
    const std::size_t digits_start = i_;
    while (std::isdigit(static_cast<unsigned char>(peek())) || peek() == '_') ++i_;
    if (i_ == digits_start) fail("expected a number");
    if (peek() == '#') {  // Base#Digits
      unsigned base = 0;
      std::string b(s_.substr(digits_start, i_ - digits_start));
      std::from_chars(b.data(), b.data() + b.size(), base);
      if (base < 2 || base > 36) fail("base must be 2..36");
      ++i_;
      const std::size_t ds = i_;
      while (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '_') ++i_;
      return integer_from_digits(negative, s_.substr(ds, i_ - ds), base);
    }
    const bool is_float = peek() == '.' && std::isdigit(static_cast<unsigned char>(peek(1)));
    if (!is_float) return integer_from_digits(negative, s_.substr(digits_start, i_ - digits_start), 10);
    ++i_;
    while (std::isdigit(static_cast<unsigned char>(peek())) || peek() == '_') ++i_;
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '-' || peek() == '+') ++i_;
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
    }
    std::string text;
    for (char ch : s_.substr(start, i_ - start)) {
      if (ch != '_' && ch != '+') text += ch;
    }
    double d = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (ec != std::errc() || ptr != text.data() + text.size()) fail("bad float");
    try {
      return Term::float64(d);
    } catch (const EncodeError& e) {
      fail(e.what());
    }
  }

  Term integer_from_digits(bool negative, std::string_view digits, unsigned base) {
    // Little-endian base-256 magnitude, multiplied up digit by digit.
    std::vector<std::uint8_t> magnitude;
    bool any = false;
    for (char ch : digits) {
      if (ch == '_') continue;
      unsigned d = std::isdigit(static_cast<unsigned char>(ch)) ? static_cast<unsigned>(ch - '0')
                                                               : static_cast<unsigned>(std::tolower(ch) - 'a' + 10);
      if (d >= base) fail("digit out of range for base " + std::to_string(base));
      any = true;
      unsigned carry = d;
      for (auto& byte : magnitude) {
        const unsigned v = byte * base + carry;
        byte = static_cast<std::uint8_t>(v & 0xFF);
        carry = v >> 8;
      }
      while (carry != 0) {
        magnitude.push_back(static_cast<std::uint8_t>(carry & 0xFF));
        carry >>= 8;
      }
    }
    if (!any) fail("expected digits");
    return Term::big_integer(negative, std::move(magnitude));
  }

  Term export_fun() {
    expect("fun");
    const std::string module = atom_text();
    expect(":");
    const std::string function = atom_text();
    expect("/");
    const auto arity = number().as_int64();
    if (!arity || *arity < 0 || *arity > 255) fail("arity must be 0..255");
    return Term::export_fun(module, function, static_cast<std::uint8_t>(*arity));
  }

  std::uint64_t unsigned_field() {
    skip_space();
    const std::size_t start = i_;
    while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
    std::uint64_t v = 0;
    if (std::from_chars(s_.data() + start, s_.data() + i_, v).ec != std::errc()) fail("expected a number");
    return v;
  }

  std::uint32_t u32_field() {
    const std::uint64_t v = unsigned_field();
    if (v > UINT32_MAX) fail("number does not fit 32 bits");
    return static_cast<std::uint32_t>(v);
  }

  // #Pid<'node'.Id.Serial.Creation>, #Port<'node'.Id.Creation>, #Ref<'node'.Creation.W...>
  Term special() {
    expect("#");
    const std::string kind = bare_word();
    expect("<");
    const std::string node = atom_text();
    try {
      if (kind == "Pid") {
        expect(".");
        Pid p{node, u32_field(), 0, 0};
        expect(".");
        p.serial = u32_field();
        expect(".");
        p.creation = u32_field();
        expect(">");
        return Term::pid(std::move(p));
      }
      if (kind == "Port") {
        expect(".");
        Port p{node, unsigned_field(), 0};
        expect(".");
        p.creation = u32_field();
        expect(">");
        return Term::port(std::move(p));
      }
      if (kind == "Ref") {
        expect(".");
        Reference r{node, u32_field(), {}};
        while (accept(".")) r.ids.push_back(u32_field());
        std::reverse(r.ids.begin(), r.ids.end());  // printed most significant first
        expect(">");
        return Term::reference(std::move(r));
      }
    } catch (const EncodeError& e) {
      fail(e.what());
    }
    fail("unknown #" + kind + "<...> form (local funs cannot be written as text)");
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::size_t max_depth_;
};

}  // namespace

Term parse_term(std::string_view text, std::size_t max_depth) {
  try {
    return Parser(text, max_depth).parse_all();
  } catch (const EncodeError& e) {
    throw ParseError(0, e.what());
  }
}

}  // namespace camlbeam::etf
