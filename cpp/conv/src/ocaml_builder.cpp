// Erlang term events → Erl.Term.t on the OCaml heap.
//
// GC discipline: a raw `value` is only held across an allocation when it is registered
// (CAMLparam/CAMLlocal) or stored in the rooted stack array. Containers are allocated when
// they open (fields initialised to ()), stored in the stack array, and filled with
// caml_modify as their children complete.
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/conv/layout.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>

#include <gmp.h>
#include <zarith.h>

#include <cstring>
#include <stdexcept>

namespace camlbeam::conv {

// ---------------------------------------------------------------------------------------
// Root

Root::Root() noexcept : v_(Val_unit), registered_(false) {}

Root::Root(value v) : v_(v), registered_(true) { caml_register_generational_global_root(&v_); }

Root::Root(Root&& other) noexcept : Root() {
  if (other.registered_) {
    v_ = other.v_;
    caml_register_generational_global_root(&v_);
    registered_ = true;
  }
}

Root& Root::operator=(Root&& other) noexcept {
  if (this != &other) {
    if (other.registered_) set(other.v_);
  }
  return *this;
}

Root::~Root() {
  if (registered_) caml_remove_generational_global_root(&v_);
}

void Root::set(value v) {
  if (registered_) {
    caml_modify_generational_global_root(&v_, v);
  } else {
    v_ = v;
    caml_register_generational_global_root(&v_);
    registered_ = true;
  }
}

// ---------------------------------------------------------------------------------------
// Allocation of leaves

namespace {

using namespace layout;

value ocaml_string(std::span<const std::uint8_t> bytes) {
  value s = caml_alloc_string(bytes.size());
  if (!bytes.empty()) std::memcpy(Bytes_val(s), bytes.data(), bytes.size());
  return s;
}

value ocaml_string(std::string_view text) {
  return ocaml_string({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

// Constructor `tag` of Erl.Term.t (or of a record) with one field.
value wrap1(tag_t tag, value field) {
  CAMLparam1(field);
  CAMLlocal1(block);
  block = caml_alloc_small(1, tag);
  Field(block, 0) = field;
  CAMLreturn(block);
}

value integer_value(bool negative, std::span<const std::uint8_t> magnitude) {
  CAMLparam0();
  CAMLlocal1(z);
  mpz_t m;
  mpz_init(m);
  mpz_import(m, magnitude.size(), -1, 1, 0, 0, magnitude.data());  // little-endian bytes
  if (negative) mpz_neg(m, m);
  z = ml_z_from_mpz(m);
  mpz_clear(m);
  CAMLreturn(wrap1(term_tag::bigint, z));
}

value int_value(std::int64_t v) {
  if (v >= Min_long && v <= Max_long) return wrap1(term_tag::int_, Val_long(v));
  const bool negative = v < 0;
  std::uint64_t m = negative ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  std::uint8_t bytes[8];
  for (auto& b : bytes) {
    b = static_cast<std::uint8_t>(m & 0xFF);
    m >>= 8;
  }
  return integer_value(negative, bytes);
}

value pid_record(const etf::PidView& pid) {
  CAMLparam0();
  CAMLlocal2(node, record);
  node = ocaml_string(pid.node);
  record = caml_alloc_small(4, 0);
  Field(record, 0) = node;
  Field(record, 1) = Val_long(pid.id);
  Field(record, 2) = Val_long(pid.serial);
  Field(record, 3) = Val_long(pid.creation);
  CAMLreturn(record);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// OcamlBuilder

enum class OpenKind : std::uint8_t { tuple, list, map, fun };

struct OcamlBuilder::Frame {
  OpenKind kind;
  std::size_t base;      // stack slot of the container; base + 1: last cons / pending pair
  std::size_t expected;  // children before the end (lists: elements, not counting the tail)
  std::size_t filled = 0;
  std::size_t merged_tails = 0;  // lists: tail lists folded into this one
  bool has_cells = false;        // lists and funs: base + 1 holds the last cons cell
};

namespace {

constexpr std::size_t slots_per_frame = 2;
constexpr std::size_t initial_slots = 64;

}  // namespace

OcamlBuilder::OcamlBuilder() : stack_(caml_alloc(initial_slots, 0)) {}

OcamlBuilder::~OcamlBuilder() = default;

value& OcamlBuilder::slot(std::size_t i) noexcept { return Field(stack_.get(), i); }

void OcamlBuilder::grow_stack(std::size_t needed) {
  const std::size_t old_size = Wosize_val(stack_.get());
  if (needed <= old_size) return;
  std::size_t new_size = old_size * 2;
  while (new_size < needed) new_size *= 2;
  value bigger = caml_alloc(new_size, 0);
  for (std::size_t i = 0; i < old_size; ++i) caml_modify(&Field(bigger, i), Field(stack_.get(), i));
  stack_.set(bigger);
}

void OcamlBuilder::push_open(value block, std::uint8_t kind, std::size_t expected) {
  CAMLparam1(block);
  grow_stack(used_ + slots_per_frame);
  const std::size_t base = used_;
  caml_modify(&slot(base), block);
  caml_modify(&slot(base + 1), Val_unit);
  used_ += slots_per_frame;
  frames_.push_back(Frame{static_cast<OpenKind>(kind), base, expected});
  CAMLreturn0;
}

// A cons cell holding v, ending the list.
static value new_cell(value v) {
  CAMLparam1(v);
  CAMLlocal1(cell);
  cell = caml_alloc_small(2, 0);
  Field(cell, 0) = v;
  Field(cell, 1) = Val_emptylist;
  CAMLreturn(cell);
}

// Links a new cell after the last one, or makes it the head. The slots are references
// into OCaml blocks (the stack array, a fun's record): they must be taken after the
// cell's allocation, since a minor collection moves young blocks.
static void link_cell(value& head_slot, value& last_slot, bool& has_cells, value cell) {
  if (has_cells) caml_modify(&Field(last_slot, 1), cell);
  else caml_modify(&head_slot, cell);
  caml_modify(&last_slot, cell);
  has_cells = true;
}

void OcamlBuilder::emit(value v) {
  CAMLparam1(v);
  if (frames_.empty()) {
    caml_modify(&slot(0), v);
    CAMLreturn0;
  }
  Frame& top = frames_.back();
  switch (top.kind) {
    case OpenKind::tuple:
      caml_modify(&Field(slot(top.base), top.filled), v);
      break;
    case OpenKind::map:
      if (top.filled % 2 == 0) {
        value pair = caml_alloc_small(2, 0);
        Field(pair, 0) = v;
        Field(pair, 1) = Val_unit;
        caml_modify(&Field(slot(top.base), top.filled / 2), pair);
      } else {
        caml_modify(&Field(Field(slot(top.base), top.filled / 2), 1), v);
      }
      break;
    case OpenKind::fun:
      // base: the Local record; its free variables are built as an OCaml list whose head is
      // stored in the record's last field and whose last cell sits in base + 1.
    {
      const value cell = new_cell(v);  // allocate first, then take references into blocks
      link_cell(Field(slot(top.base), local_field::free_vars), slot(top.base + 1), top.has_cells, cell);
      break;
    }
    case OpenKind::list:
      if (top.filled < top.expected) {
        const value cell = new_cell(v);
        link_cell(slot(top.base), slot(top.base + 1), top.has_cells, cell);
      } else {
        // The tail. A proper list ends in []; a list tail was merged in begin_list.
        caml_modify(&slot(top.base + 1), v);  // the last cell is no longer needed: keep the tail
        top.has_cells = false;
      }
      break;
  }
  ++top.filled;
  CAMLreturn0;
}

void OcamlBuilder::integer(std::int64_t v) { emit(int_value(v)); }

void OcamlBuilder::big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
  emit(integer_value(negative, magnitude));
}

void OcamlBuilder::float64(double d) { emit(wrap1(term_tag::float_, caml_copy_double(d))); }

void OcamlBuilder::atom(std::string_view utf8) { emit(wrap1(term_tag::atom, ocaml_string(utf8))); }

void OcamlBuilder::binary(std::span<const std::uint8_t> bytes) {
  emit(wrap1(term_tag::binary, ocaml_string(bytes)));
}

void OcamlBuilder::bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) {
  CAMLparam0();
  CAMLlocal2(data, block);
  data = ocaml_string(bytes);
  block = caml_alloc_small(2, term_tag::bitstring);
  Field(block, 0) = data;
  Field(block, 1) = Val_int(bits);
  emit(block);
  CAMLreturn0;
}

void OcamlBuilder::nil() { emit(wrap1(term_tag::list, Val_emptylist)); }

bool OcamlBuilder::at_list_tail() const noexcept {
  return !frames_.empty() && frames_.back().kind == OpenKind::list &&
         frames_.back().filled == frames_.back().expected;
}

void OcamlBuilder::string(std::span<const std::uint8_t> bytes) {
  if (at_list_tail()) {
    // [X, Y | "ab"] is [X, Y, $a, $b]: continue the open list.
    Frame& top = frames_.back();
    top.expected += bytes.size();
    for (std::uint8_t b : bytes) emit(int_value(b));
    nil();
    return;
  }
  CAMLparam0();
  CAMLlocal3(list, cell, elem);
  list = Val_emptylist;
  for (std::size_t i = bytes.size(); i-- > 0;) {
    elem = wrap1(term_tag::int_, Val_int(bytes[i]));
    cell = caml_alloc_small(2, 0);
    Field(cell, 0) = elem;
    Field(cell, 1) = list;
    list = cell;
  }
  emit(wrap1(term_tag::list, list));
  CAMLreturn0;
}

void OcamlBuilder::begin_list(std::uint32_t n) {
  if (at_list_tail()) {
    // [X | [Y, Z]] is [X, Y, Z]: fold the tail list into the open one.
    frames_.back().expected += n;
    ++frames_.back().merged_tails;
    return;
  }
  push_open(Val_emptylist, static_cast<std::uint8_t>(OpenKind::list), n);
}

void OcamlBuilder::end_list() {
  Frame& top = frames_.back();
  if (top.merged_tails > 0) {
    --top.merged_tails;
    return;
  }
  CAMLparam0();
  CAMLlocal3(head, tail, result);
  head = slot(top.base);
  tail = slot(top.base + 1);
  const bool proper = Tag_val(tail) == term_tag::list && Field(tail, 0) == Val_emptylist;
  if (proper) {
    result = wrap1(term_tag::list, head);
  } else {
    result = caml_alloc_small(2, term_tag::improper);
    Field(result, 0) = head;
    Field(result, 1) = tail;
  }
  used_ = top.base;
  frames_.pop_back();
  emit(result);
  CAMLreturn0;
}

void OcamlBuilder::begin_tuple(std::uint32_t n) {
  push_open(n == 0 ? Atom(0) : caml_alloc(n, 0), static_cast<std::uint8_t>(OpenKind::tuple), n);
}

void OcamlBuilder::end_tuple() {
  const Frame top = frames_.back();
  value elements = slot(top.base);
  used_ = top.base;
  frames_.pop_back();
  emit(wrap1(term_tag::tuple, elements));
}

void OcamlBuilder::begin_map(std::uint32_t n) {
  push_open(n == 0 ? Atom(0) : caml_alloc(n, 0), static_cast<std::uint8_t>(OpenKind::map),
            std::size_t{n} * 2);
}

namespace {

// Erl.Term.map_of_array sorts the bindings; it keeps the last of equal keys, so a shorter
// result means the wire repeated a key. Returns Val_unit for that case (the caller throws:
// no C++ exception may leave a function that registered OCaml local roots).
value sorted_map_or_unit(value bindings) {
  CAMLparam1(bindings);
  CAMLlocal1(map);
  static const value* map_of_array = caml_named_value("camlbeam.map_of_array");
  if (map_of_array == nullptr) CAMLreturn(Val_unit);
  map = caml_callback_exn(*map_of_array, bindings);
  if (Is_exception_result(map) || Wosize_val(Field(map, 0)) != Wosize_val(bindings)) CAMLreturn(Val_unit);
  CAMLreturn(map);
}

}  // namespace

void OcamlBuilder::end_map() {
  const Frame top = frames_.back();
  value bindings = slot(top.base);
  used_ = top.base;
  frames_.pop_back();
  if (Wosize_val(bindings) == 0) {
    emit(wrap1(term_tag::map, bindings));
    return;
  }
  value map = sorted_map_or_unit(bindings);
  if (map == Val_unit) {
    if (caml_named_value("camlbeam.map_of_array") == nullptr)
      throw std::logic_error("camlbeam.map_of_array is not registered: the Erl library is not linked");
    throw etf::Reject{etf::Errc::duplicate_map_key};
  }
  emit(map);
}

void OcamlBuilder::pid(const etf::PidView& pid) { emit(wrap1(term_tag::pid, pid_record(pid))); }

void OcamlBuilder::port(const etf::PortView& port) {
  CAMLparam0();
  CAMLlocal3(node, id, record);
  node = ocaml_string(port.node);
  id = caml_copy_int64(static_cast<std::int64_t>(port.id));
  record = caml_alloc_small(3, 0);
  Field(record, 0) = node;
  Field(record, 1) = id;
  Field(record, 2) = Val_long(port.creation);
  emit(wrap1(term_tag::port, record));
  CAMLreturn0;
}

void OcamlBuilder::reference(const etf::ReferenceView& ref) {
  CAMLparam0();
  CAMLlocal3(node, ids, record);
  node = ocaml_string(ref.node);
  ids = caml_alloc_small(static_cast<mlsize_t>(ref.ids.size()), 0);
  for (std::size_t i = 0; i < ref.ids.size(); ++i) Field(ids, i) = Val_long(ref.ids[i]);
  record = caml_alloc_small(3, 0);
  Field(record, 0) = node;
  Field(record, 1) = Val_long(ref.creation);
  Field(record, 2) = ids;
  emit(wrap1(term_tag::ref, record));
  CAMLreturn0;
}

void OcamlBuilder::begin_fun(const etf::FunView& fun) {
  CAMLparam0();
  CAMLlocal4(uniq, module, pid, local);
  uniq = ocaml_string(std::span<const std::uint8_t>(fun.uniq));
  module = ocaml_string(fun.module);
  pid = pid_record(fun.pid);
  local = caml_alloc_small(local_field::count, fun_tag::local);
  Field(local, local_field::arity) = Val_int(fun.arity);
  Field(local, local_field::uniq) = uniq;
  Field(local, local_field::index) = Val_long(fun.index);
  Field(local, local_field::module_) = module;
  Field(local, local_field::old_index) = Val_long(fun.old_index);
  Field(local, local_field::old_uniq) = Val_long(fun.old_uniq);
  Field(local, local_field::pid) = pid;
  Field(local, local_field::free_vars) = Val_emptylist;
  push_open(local, static_cast<std::uint8_t>(OpenKind::fun), fun.free_count);
  CAMLreturn0;
}

void OcamlBuilder::end_fun() {
  const Frame top = frames_.back();
  value local = slot(top.base);
  used_ = top.base;
  frames_.pop_back();
  emit(wrap1(term_tag::fun, local));
}

void OcamlBuilder::export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
  CAMLparam0();
  CAMLlocal3(m, f, exp);
  m = ocaml_string(module);
  f = ocaml_string(function);
  exp = caml_alloc_small(3, fun_tag::export_);
  Field(exp, 0) = m;
  Field(exp, 1) = f;
  Field(exp, 2) = Val_int(arity);
  emit(wrap1(term_tag::fun, exp));
  CAMLreturn0;
}

value OcamlBuilder::take() {
  value result = slot(0);
  // Clear every slot so nothing built stays reachable from the builder.
  for (std::size_t i = 0; i < Wosize_val(stack_.get()); ++i) caml_modify(&slot(i), Val_unit);
  frames_.clear();
  used_ = 1;
  return result;
}

// ---------------------------------------------------------------------------------------

DecodeToOcaml etf_to_ocaml(std::span<const std::uint8_t> bytes, const etf::DecodeOptions& options) {
  OcamlBuilder builder;
  DecodeToOcaml out;
  const etf::DecodeResult result = etf::decode(bytes, builder, options);
  if (!result) {
    out.error = result.error;
    builder.take();
    return out;
  }
  out.value.set(builder.take());
  return out;
}

}  // namespace camlbeam::conv
