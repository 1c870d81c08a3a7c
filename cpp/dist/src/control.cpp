#include <camlbeam/dist/control.hpp>

#include "control_elements.hpp"

#include <camlbeam/etf/term_builder.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace camlbeam::dist {
namespace {

using detail::ControlElement;
using etf::Term;

// ---- One field: a term to its typed form (false, leaving the term alone, when it is not
// of that type) and back.

bool read_field(Term& t, etf::Atom& out) {
  if (auto* atom = std::get_if<etf::Atom>(&t.repr())) {
    out = std::move(*atom);
    return true;
  }
  return false;
}
template <class T>
bool read_boxed(Term& t, T& out) {
  if (auto* boxed = std::get_if<etf::Boxed<T>>(&t.repr())) {
    out = std::move(**boxed);
    return true;
  }
  return false;
}
bool read_field(Term& t, etf::Pid& out) { return read_boxed(t, out); }
bool read_field(Term& t, etf::Reference& out) { return read_boxed(t, out); }
// A non-negative integer of at most 64 bits (unlink ids are, and OTP writes the big ones
// as SMALL_BIG).
bool read_field(Term& t, std::uint64_t& out) {
  if (const auto small = t.as_int64()) {
    if (*small < 0) return false;
    out = static_cast<std::uint64_t>(*small);
    return true;
  }
  const auto* big = std::get_if<etf::Boxed<etf::BigInteger>>(&t.repr());
  if (big == nullptr || (*big)->negative || (*big)->magnitude.size() > 8) return false;
  std::uint64_t value = 0;
  for (std::size_t i = (*big)->magnitude.size(); i-- > 0;) value = (value << 8) | (*big)->magnitude[i];
  out = value;
  return true;
}
bool read_field(Term& t, Mfa& out) {
  auto* tuple = std::get_if<etf::Tuple>(&t.repr());
  if (tuple == nullptr || tuple->elements.size() != 3) return false;
  const auto arity = tuple->elements[2].as_int64();
  if (!arity || *arity < 0 || *arity > 255) return false;
  Mfa mfa;
  if (!read_field(tuple->elements[0], mfa.module) || !read_field(tuple->elements[1], mfa.function)) return false;
  mfa.arity = static_cast<std::uint8_t>(*arity);
  out = std::move(mfa);
  return true;
}

// The same readers over a control tuple's element: its typed form taken as it is, a Term
// read as above.
template <class T>
struct is_variant : std::false_type {};
template <class... Alternatives>
struct is_variant<std::variant<Alternatives...>> : std::true_type {};

template <class T, class Variant>
struct holds_alternative_type;
template <class T, class... Alternatives>
struct holds_alternative_type<T, std::variant<Alternatives...>>
    : std::bool_constant<(std::is_same_v<T, Alternatives> || ...)> {};

Term element_term(ControlElement&& element) {
  return std::visit(
      [](auto&& typed) -> Term {
        using E = std::decay_t<decltype(typed)>;
        if constexpr (std::is_same_v<E, Term>) return std::move(typed);
        else if constexpr (std::is_same_v<E, std::int64_t>) return Term::integer(typed);
        else if constexpr (std::is_same_v<E, etf::Atom>) return Term::from_repr(std::move(typed));
        else if constexpr (std::is_same_v<E, etf::Pid>) return Term::pid(std::move(typed));
        else return Term::reference(std::move(typed));
      },
      std::move(element));
}

template <class Field>
bool read_field(ControlElement& element, Field& out) {
  if constexpr (std::is_same_v<Field, Term>) {
    out = element_term(std::move(element));
    return true;
  } else if constexpr (is_variant<Field>::value) {
    auto try_one = [&]<class Alternative>() {
      Alternative typed{};
      if (!read_field(element, typed)) return false;
      out = std::move(typed);
      return true;
    };
    return [&]<class... Alternatives>(std::type_identity<std::variant<Alternatives...>>) {
      return (try_one.template operator()<Alternatives>() || ...);
    }(std::type_identity<Field>{});
  } else {
    if constexpr (holds_alternative_type<Field, ControlElement>::value) {
      if (auto* typed = std::get_if<Field>(&element)) {
        out = std::move(*typed);
        return true;
      }
    }
    if constexpr (std::is_same_v<Field, std::uint64_t>) {
      if (const auto* small = std::get_if<std::int64_t>(&element)) {
        if (*small < 0) return false;
        out = static_cast<std::uint64_t>(*small);
        return true;
      }
    }
    auto* term = std::get_if<Term>(&element);
    return term != nullptr && read_field(*term, out);
  }
}

// ---- One field written to a sink: etf::Writer for a frame, etf::TermBuilder for
// control_tuple().

template <class Sink>
void write_field(Sink& out, const Term& t) {
  etf::walk(t, out);
}
template <class Sink>
void write_field(Sink& out, const etf::Atom& a) {
  out.atom(a.name);
}
template <class Sink>
void write_field(Sink& out, const etf::Pid& p) {
  out.pid(etf::PidView{p.node, p.id, p.serial, p.creation});
}
template <class Sink>
void write_field(Sink& out, const etf::Reference& r) {
  out.reference(etf::ReferenceView{r.node, r.creation, r.ids});
}
template <class Sink>
void write_field(Sink& out, std::uint64_t v) {
  if (v <= static_cast<std::uint64_t>(INT64_MAX)) return out.integer(static_cast<std::int64_t>(v));
  std::uint8_t magnitude[8];
  std::size_t size = 0;
  for (; v != 0; v >>= 8) magnitude[size++] = static_cast<std::uint8_t>(v & 0xFF);
  out.big_integer(false, std::span<const std::uint8_t>(magnitude, size));
}
template <class Sink>
void write_field(Sink& out, const Mfa& mfa) {
  out.begin_tuple(3);
  write_field(out, mfa.module);
  write_field(out, mfa.function);
  out.integer(mfa.arity);
  out.end_tuple();
}
template <class Sink, class... Alternatives>
void write_field(Sink& out, const std::variant<Alternatives...>& v) {
  std::visit([&](const auto& alternative) { write_field(out, alternative); }, v);
}

// ---- One message, over its struct's description.

template <class T>
constexpr bool has_payload_member = requires {
  T::payload;
};

template <class T>
struct is_optional_member : std::false_type {};
template <class S, class V>
struct is_optional_member<std::optional<V> S::*> : std::true_type {};

template <class T>
constexpr std::size_t field_count = std::tuple_size_v<std::remove_const_t<decltype(T::fields)>>;

// A trailing optional field (ALTACT_SIG_SEND's token) may be left out of the tuple.
template <class T>
constexpr bool last_field_optional() {
  if constexpr (field_count<T> == 0) {
    return false;
  } else {
    return is_optional_member<
        std::tuple_element_t<field_count<T> - 1, std::remove_const_t<decltype(T::fields)>>>::value;
  }
}

Error bad_control(std::string detail) { return Error{Errc::bad_control, std::move(detail)}; }

template <class T>
bool read_slot(T&, UnusedSlot, std::span<ControlElement> elements, std::size_t i) {
  return i < elements.size();  // any term: OTP ignores it too
}
template <class T, class M>
bool read_slot(T& out, M T::*member, std::span<ControlElement> elements, std::size_t i) {
  if constexpr (is_optional_member<M T::*>::value) {
    if (i >= elements.size()) return true;
    (out.*member).emplace();
    return read_field(elements[i], *(out.*member));
  } else {
    return i < elements.size() && read_field(elements[i], out.*member);
  }
}

// ALTACT_SIG_SEND as OTP reads it (erts dist.c), leaving room for what later releases add:
// a tuple of 4 elements or more, of which the rest is ignored; flags any non-negative
// integer, of which the low byte counts; the token read only where the flags say there is
// one; the target of the type the flags say.
ControlResult decode_altact(std::span<ControlElement> elements, control::AltactSigSend& out) {
  const std::string what(name_of(Op::altact_sig_send));
  if (elements.size() < 3)
    return {std::nullopt, bad_control(what + ": tuple of arity " + std::to_string(elements.size() + 1))};
  const Term flags = element_term(std::move(elements[0]));
  if (const auto small = flags.as_int64(); small && *small >= 0) {
    out.flags = static_cast<std::uint64_t>(*small) & 0xff;
  } else if (const auto* big = flags.get_if<etf::Boxed<etf::BigInteger>>(); big != nullptr && !(*big)->negative) {
    out.flags = (*big)->magnitude.empty() ? 0 : (*big)->magnitude[0];  // little-endian
  } else {
    return {std::nullopt, bad_control(what + ": flags not a non-negative integer")};
  }
  const auto wrong = [&](const char* field) {
    return ControlResult{std::nullopt, bad_control(what + ": " + field + " of the wrong type for its flags")};
  };
  if (!read_field(elements[1], out.from)) return wrong("sender");
  const bool to_alias = (out.flags & altact::alias) != 0;
  const bool to_name = (out.flags & altact::name) != 0;
  if (to_alias && to_name) return wrong("target");
  const auto read_to = [&]<class Target>() {
    Target target{};
    if (!read_field(elements[2], target)) return false;
    out.to = std::move(target);
    return true;
  };
  if (!(to_alias ? read_to.template operator()<etf::Reference>()
                 : to_name ? read_to.template operator()<etf::Atom>() : read_to.template operator()<etf::Pid>()))
    return wrong("target");
  if ((out.flags & altact::token) != 0) {
    if (elements.size() < 4) return {std::nullopt, bad_control(what + ": the token flag without a token")};
    out.trace_token = element_term(std::move(elements[3]));
  }
  return {};
}

template <class T>
ControlResult decode_as(std::span<ControlElement> elements, std::optional<Term>& payload) {
  const std::string what(name_of(T::op));
  T out{};
  if constexpr (std::is_same_v<T, control::AltactSigSend>) {
    if (auto failed = decode_altact(elements, out); failed.error) return failed;
  } else {
    constexpr std::size_t n = field_count<T>;
    if (elements.size() != n && !(last_field_optional<T>() && elements.size() == n - 1))
      return {std::nullopt, bad_control(what + ": tuple of arity " + std::to_string(elements.size() + 1))};
    std::size_t i = 0;
    bool ok = true;
    auto read_next = [&](auto slot) {
      if (ok) ok = read_slot(out, slot, elements, i);
      if (ok) ++i;
    };
    std::apply([&](auto... slot) { (read_next(slot), ...); }, T::fields);
    const std::size_t bad_slot = i;
    if (!ok)
      return {std::nullopt, bad_control(what + ": element " + std::to_string(bad_slot + 2) + " has the wrong type")};
  }
  if constexpr (has_payload_member<T>) {
    if (!payload) return {std::nullopt, bad_control(what + ": no payload term after the control tuple")};
    out.*T::payload = std::move(*payload);
  } else if (payload) {
    return {std::nullopt, bad_control(what + ": a term after a control tuple that takes none")};
  }
  return {Control(std::move(out)), std::nullopt};
}

// The control tuple of a message, written to a sink: {Op, Fields...}, '' in the unused
// slots, a trailing optional field only when it is there.
template <class Sink>
void write_control_tuple(const Control& control, Sink& out) {
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        std::size_t arity = 1;
        auto count_slot = [&](auto slot) {
          if constexpr (is_optional_member<decltype(slot)>::value) arity += (c.*slot).has_value() ? 1 : 0;
          else ++arity;
        };
        std::apply([&](auto... slot) { (count_slot(slot), ...); }, T::fields);
        out.begin_tuple(static_cast<std::uint32_t>(arity));
        out.integer(static_cast<std::int64_t>(T::op));
        auto write_slot = [&](auto slot) {
          if constexpr (std::is_same_v<decltype(slot), UnusedSlot>) {
            out.atom("");
          } else if constexpr (is_optional_member<decltype(slot)>::value) {
            if (c.*slot) write_field(out, *(c.*slot));
          } else {
            write_field(out, c.*slot);
          }
        };
        std::apply([&](auto... slot) { (write_slot(slot), ...); }, T::fields);
        out.end_tuple();
      },
      control);
}

// ---- The table: operation number -> what the description above makes of it.

struct OpEntry {
  ControlResult (*decode)(std::span<ControlElement>, std::optional<Term>&) = nullptr;
  bool has_payload = false;
};
constexpr std::size_t op_count = 38;  // 0 .. ALTACT_SIG_SEND

template <std::size_t... I>
constexpr std::array<OpEntry, op_count> make_op_table(std::index_sequence<I...>) {
  std::array<OpEntry, op_count> table{};
  ((table[static_cast<std::size_t>(std::variant_alternative_t<I, Control>::op)] =
        OpEntry{&decode_as<std::variant_alternative_t<I, Control>>,
                has_payload_member<std::variant_alternative_t<I, Control>>}),
   ...);
  return table;
}
constexpr auto op_table = make_op_table(std::make_index_sequence<std::variant_size_v<Control>>());

const OpEntry* find_op(std::int64_t number) noexcept {
  if (number < 0 || number >= static_cast<std::int64_t>(op_count)) return nullptr;
  const OpEntry& entry = op_table[static_cast<std::size_t>(number)];
  return entry.decode != nullptr ? &entry : nullptr;
}

}  // namespace

Op op_of(const Control& control) noexcept {
  return std::visit([](const auto& c) { return std::decay_t<decltype(c)>::op; }, control);
}

std::string_view name_of(Op op) noexcept {
  switch (op) {
#define CAMLBEAM_DIST_OP_NAME(name, number) \
  case Op::name:                            \
    return #name;
    CAMLBEAM_DIST_OPERATIONS(CAMLBEAM_DIST_OP_NAME)
#undef CAMLBEAM_DIST_OP_NAME
  }
  return {};
}

bool has_payload(Op op) noexcept {
  const OpEntry* entry = find_op(static_cast<std::int64_t>(op));
  return entry != nullptr && entry->has_payload;
}

ControlResult control_from_terms(Term tuple, std::optional<Term> payload) {
  auto* tuple_elements = std::get_if<etf::Tuple>(&tuple.repr());
  if (tuple_elements == nullptr)
    return {std::nullopt,
            bad_control("the control message is a " + std::string(to_string(tuple.kind())) + ", not a tuple")};
  std::vector<ControlElement> elements;
  elements.reserve(tuple_elements->elements.size());
  for (Term& element : tuple_elements->elements) elements.emplace_back(std::move(element));
  return detail::control_from_elements(elements, std::move(payload));
}

ControlResult detail::control_from_elements(std::span<ControlElement> elements, std::optional<Term> payload) {
  if (elements.empty()) return {std::nullopt, bad_control("the control message is {}")};
  std::optional<std::int64_t> number;
  if (const auto* small = std::get_if<std::int64_t>(&elements[0])) number = *small;
  else if (const auto* term = std::get_if<Term>(&elements[0])) number = term->as_int64();
  const OpEntry* entry = number ? find_op(*number) : nullptr;
  if (entry == nullptr)
    return {std::nullopt, bad_control("unknown operation " + element_term(std::move(elements[0])).to_string())};
  return entry->decode(elements.subspan(1), payload);
}

etf::Term control_tuple(const Control& control) {
  // As MessageReader built its terms: a map from OTP 27 may hold both 0.0 and -0.0.
  etf::TermBuilder builder({.zero_signs_apart = true});
  write_control_tuple(control, builder);
  return builder.take();
}

const etf::Term* payload_of(const Control& control) noexcept {
  return std::visit(
      [](const auto& c) -> const Term* {
        using T = std::decay_t<decltype(c)>;
        if constexpr (has_payload_member<T>)
          return &(c.*T::payload);
        else
          return nullptr;
      },
      control);
}

namespace {

std::optional<Error> encode_frame_with(const Control& control, std::uint64_t negotiated_flags, etf::ByteBuffer& out,
                                       const PayloadWriter* write_payload) {
  const std::uint64_t needs = std::visit([](const auto& c) { return std::decay_t<decltype(c)>::needs; }, control);
  if ((negotiated_flags & needs) != needs)
    return Error{Errc::bad_state, std::string(name_of(op_of(control))) + " needs a flag the peer did not offer"};
  const std::size_t start = out.size();
  // Over distribution OTP writes every atom in a UTF-8 form: minor version 2.
  etf::Writer writer(out, 2);
  const bool with_header = (negotiated_flags & flag::dist_hdr_atom_cache) != 0;
  // Pass-through terms are whole external terms.
  auto begin_term = [&] {
    if (!with_header) writer.version();
  };
  try {
    if (with_header) {
      // erl_ext_dist: NumberOfAtomCacheRefs 0, and then neither flags nor references.
      const std::uint8_t empty_header[] = {131, 68, 0};
      out.append(empty_header);
    } else {
      out.push(112);
    }
    begin_term();
    write_control_tuple(control, writer);
    if (write_payload != nullptr) {
      begin_term();
      (*write_payload)(writer);
    } else if (const Term* payload = payload_of(control)) {
      begin_term();
      etf::walk(*payload, writer);
    }
  } catch (const etf::EncodeError& e) {
    out.truncate(start);
    return Error{Errc::bad_term, e.what()};
  } catch (...) {
    out.truncate(start);
    throw;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Error> encode_frame(const Control& control, std::uint64_t negotiated_flags, etf::ByteBuffer& out) {
  return encode_frame_with(control, negotiated_flags, out, nullptr);
}

std::optional<Error> encode_frame(const Control& control, std::uint64_t negotiated_flags, etf::ByteBuffer& out,
                                  const PayloadWriter& write_payload) {
  if (payload_of(control) == nullptr) {
    return Error{Errc::bad_state, std::string(name_of(op_of(control))) + " carries no payload to write"};
  }
  return encode_frame_with(control, negotiated_flags, out, &write_payload);
}

std::optional<Error> encode_frames(const Control& control, std::uint64_t negotiated_flags, std::uint64_t sequence_id,
                                   std::vector<std::vector<std::uint8_t>>& bodies, std::size_t fragment_size) {
  if (fragment_size == 0) return Error{Errc::bad_state, "fragments of 0 bytes"};
  etf::ByteBuffer whole;
  if (auto error = encode_frame(control, negotiated_flags, whole)) return error;
  constexpr std::uint64_t fragmenting = flag::fragments | flag::dist_hdr_atom_cache;
  constexpr std::size_t empty_header_size = 3;  // 131 68 0
  if ((negotiated_flags & fragmenting) != fragmenting || whole.size() - empty_header_size <= fragment_size) {
    bodies.push_back(whole.to_vector());
    return std::nullopt;
  }
  const auto terms = whole.span().subspan(empty_header_size);
  const std::size_t count = (terms.size() + fragment_size - 1) / fragment_size;
  auto append_u64 = [](std::vector<std::uint8_t>& out, std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
  };
  for (std::size_t i = 0; i < count; ++i) {
    const auto piece = terms.subspan(i * fragment_size, std::min(fragment_size, terms.size() - i * fragment_size));
    std::vector<std::uint8_t> body;
    body.reserve(19 + piece.size());
    body.push_back(131);
    body.push_back(i == 0 ? 69 : 70);
    append_u64(body, sequence_id);
    append_u64(body, count - i);    // fragment ids count down to 1
    if (i == 0) body.push_back(0);  // no atom cache references
    body.insert(body.end(), piece.begin(), piece.end());
    bodies.push_back(std::move(body));
  }
  return std::nullopt;
}

}  // namespace camlbeam::dist
