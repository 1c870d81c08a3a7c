// The whole public surface of camlbeam::etf.
#pragma once

#include <camlbeam/etf/atom_cache.hpp>
#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/limits.hpp>
#include <camlbeam/etf/tags.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/etf/text.hpp>
#include <camlbeam/etf/visitor.hpp>
