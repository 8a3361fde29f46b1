// Protocol v1 grammar: single spaces between words, printable ASCII only, strict arguments.
#include "tunnel/protocol.hpp"

#include <fmt/format.h>

#include "tunnel/auth.hpp"
#include "tunnel/words.hpp"

namespace tunnel::protocol {
namespace {

bool printable(std::string_view line) {
  for (unsigned char c : line)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

bool any_empty(const std::vector<std::string_view>& words) {
  for (auto w : words)
    if (w.empty()) return true;
  return false;
}

Malformed bad(std::string reason) {
  return {std::string(kErrBadRequest), std::move(reason)};
}

std::vector<std::string> features_from(const std::vector<std::string_view>& words, size_t first) {
  std::vector<std::string> features;
  for (size_t i = first; i < words.size(); ++i) features.emplace_back(words[i]);
  return features;
}

std::string join_features(std::string head, const std::vector<std::string>& features) {
  for (const auto& f : features) head += " " + f;
  return head + "\n";
}

// A decimal count without leading zeros, at most kMaxPoolRequest.
bool parse_count(std::string_view word, size_t& count) {
  if (word.empty() || word.size() > 4 || (word.size() > 1 && word[0] == '0')) return false;
  size_t value = 0;
  for (char c : word) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<size_t>(c - '0');
  }
  if (value > kMaxPoolRequest) return false;
  count = value;
  return true;
}

}  // namespace

bool is_service_name(std::string_view word) {
  return auth::is_name(word);
}

bool is_token(std::string_view word) {
  if (word.empty() || word.size() > 32) return false;
  for (unsigned char c : word)
    if (c <= 0x20 || c > 0x7e) return false;
  return true;
}

namespace {

// The hello's grammar alone.
Hello parse_hello_grammar(std::string_view line) {
  if (!printable(line)) return bad("first line has non-printable bytes");
  auto words = split_words(line);
  if (any_empty(words)) return bad("first line has empty words");
  if (words[0].starts_with("TUNNEL/") && words[0] != kVersionTag)
    return Malformed{std::string(kErrVersion), fmt::format("only {} is spoken here", kVersionTag)};
  if (words[0] != kVersionTag || words.size() < 2) return bad("expected 'TUNNEL/1 CONTROL|DATA'");
  if (words[1] == "CONTROL") {
    for (size_t i = 2; i < words.size(); ++i)
      if (!is_token(words[i])) return bad("bad feature name");
    return ControlHello{features_from(words, 2)};
  }
  if (words[1] == "DATA") {
    if (words.size() != 3 && words.size() != 4)
      return bad("expected 'TUNNEL/1 DATA <id> [<proof>]'");
    auto id = ConnId::parse(words[2]);
    if (!id) return bad("connection id is not 32 lowercase hex digits");
    if (words.size() == 4 && !auth::is_hex64(words[3]))
      return bad("data proof is not 64 lowercase hex digits");
    return DataHello{*id, words.size() == 4 ? std::string(words[3]) : std::string()};
  }
  return bad("expected CONTROL or DATA");
}

// The second word of a first line, whatever else is wrong with it.
HelloKind claimed_kind(std::string_view line) {
  auto first_space = line.find(' ');
  if (first_space == std::string_view::npos) return HelloKind::unknown;
  auto second = line.substr(first_space + 1);
  second = second.substr(0, second.find(' '));
  if (second == "DATA") return HelloKind::data;
  if (second == "CONTROL") return HelloKind::control;
  return HelloKind::unknown;
}

}  // namespace

Hello parse_hello(std::string_view line) {
  Hello hello = parse_hello_grammar(line);
  if (auto* malformed = std::get_if<Malformed>(&hello)) malformed->claimed = claimed_kind(line);
  return hello;
}

Parsed parse_message(std::string_view line) {
  if (!printable(line)) return bad("line has non-printable bytes");
  auto words = split_words(line);
  if (any_empty(words)) return bad("line has empty words");
  Message m;
  const auto verb = words[0];
  auto need = [&](size_t count) { return words.size() == count; };
  auto take_id = [&](size_t at) {
    auto id = ConnId::parse(words[at]);
    if (id) m.id = *id;
    return id.has_value();
  };
  if (verb == "NEW") {
    m.verb = Verb::new_conn;
    if (!(need(2) || need(3)) || !take_id(1) || (need(3) && !is_service_name(words[2])))
      return bad("expected 'NEW <id> [<service>]'");
    if (need(3)) m.service = words[2];
  } else if (verb == "CLOSE") {
    m.verb = Verb::close_conn;
    if (!need(2) || !take_id(1)) return bad("expected 'CLOSE <id>'");
  } else if (verb == "SERVE" || verb == "SERVING") {
    m.verb = verb == "SERVE" ? Verb::serve : Verb::serving;
    if (!need(2) || !is_service_name(words[1]))
      return bad(fmt::format("expected '{} <service>'", verb));
    m.service = words[1];
  } else if (verb == "REFUSED") {
    m.verb = Verb::refused;
    if (!need(3) || !is_service_name(words[1]) || !is_token(words[2]))
      return bad("expected 'REFUSED <service> <reason>'");
    m.service = words[1];
    m.word = words[2];
  } else if (verb == "PARK" || verb == "TAKEN" || verb == "READY") {
    m.verb = verb == "PARK" ? Verb::park : verb == "TAKEN" ? Verb::taken : Verb::ready;
    if (!need(2) || !take_id(1)) return bad(fmt::format("expected '{} <id>'", verb));
  } else if (verb == "POOL") {
    m.verb = Verb::pool;
    if (!need(2) || !parse_count(words[1], m.count))
      return bad(fmt::format("expected 'POOL <n>' with n from 0 to {}", kMaxPoolRequest));
  } else if (verb == "FAIL") {
    m.verb = Verb::fail;
    if (!need(3) || !take_id(1) || !is_token(words[2])) return bad("expected 'FAIL <id> <reason>'");
    m.word = words[2];
  } else if (verb == "PING" || verb == "PONG") {
    m.verb = verb == "PING" ? Verb::ping : Verb::pong;
    if (!need(2) || !is_token(words[1])) return bad(fmt::format("expected '{} <token>'", verb));
    m.word = words[1];
  } else if (verb == "AUTH-CHALLENGE") {
    m.verb = Verb::auth_challenge;
    if (!need(2) || !auth::is_hex64(words[1])) return bad("expected 'AUTH-CHALLENGE <nonce>'");
    m.nonce = words[1];
  } else if (verb == "AUTH-PROOF") {
    m.verb = Verb::auth_proof;
    if (!need(4) || !auth::is_name(words[1]) || !auth::is_hex64(words[2]) ||
        !auth::is_hex64(words[3]))
      return bad("expected 'AUTH-PROOF <name> <nonce> <proof>'");
    m.word = words[1];
    m.nonce = words[2];
    m.proof = words[3];
  } else if (verb == "AUTH-OK") {
    m.verb = Verb::auth_ok;
    if (!need(2) || !auth::is_hex64(words[1])) return bad("expected 'AUTH-OK <proof>'");
    m.proof = words[1];
  } else if (verb == "OK") {
    m.verb = Verb::ok;
    for (size_t i = 1; i < words.size(); ++i)
      if (!is_token(words[i])) return bad("bad feature name");
    m.features = features_from(words, 1);
  } else if (verb == "ERR") {
    m.verb = Verb::err;
    if (words.size() < 2) return bad("expected 'ERR <code> <text>'");
    m.word = words[1];
    auto text_start = line.find(' ', 4);
    if (text_start != std::string_view::npos) m.text = line.substr(text_start + 1);
  } else {
    m.verb = Verb::unknown;
    m.word = verb;
  }
  return m;
}

std::string control_hello(const std::vector<std::string>& features) {
  return join_features(fmt::format("{} CONTROL", kVersionTag), features);
}
std::string data_hello(const ConnId& id, std::string_view proof) {
  if (proof.empty()) return fmt::format("{} DATA {}\n", kVersionTag, id.hex());
  return fmt::format("{} DATA {} {}\n", kVersionTag, id.hex(), proof);
}
std::string ok(const std::vector<std::string>& features) {
  return join_features("OK", features);
}
std::string err(std::string_view code, std::string_view text) {
  // No trailing space when there is no text: the grammar has no empty words.
  return text.empty() ? fmt::format("ERR {}\n", code) : fmt::format("ERR {} {}\n", code, text);
}
std::string new_conn(const ConnId& id, std::string_view service) {
  if (service.empty()) return fmt::format("NEW {}\n", id.hex());
  return fmt::format("NEW {} {}\n", id.hex(), service);
}
std::string close_conn(const ConnId& id) {
  return fmt::format("CLOSE {}\n", id.hex());
}
std::string fail(const ConnId& id, std::string_view reason) {
  return fmt::format("FAIL {} {}\n", id.hex(), reason);
}
std::string ping(std::string_view token) {
  return fmt::format("PING {}\n", token);
}
std::string pong(std::string_view token) {
  return fmt::format("PONG {}\n", token);
}
std::string auth_challenge(std::string_view nonce) {
  return fmt::format("AUTH-CHALLENGE {}\n", nonce);
}
std::string auth_proof(std::string_view name, std::string_view nonce, std::string_view proof) {
  return fmt::format("AUTH-PROOF {} {} {}\n", name, nonce, proof);
}
std::string auth_ok(std::string_view proof) {
  return fmt::format("AUTH-OK {}\n", proof);
}
std::string serve(std::string_view service) {
  return fmt::format("SERVE {}\n", service);
}
std::string serving(std::string_view service) {
  return fmt::format("SERVING {}\n", service);
}
std::string refused(std::string_view service, std::string_view reason) {
  return fmt::format("REFUSED {} {}\n", service, reason);
}

std::string pool(size_t count) {
  return fmt::format("POOL {}\n", count);
}
std::string park(const ConnId& id) {
  return fmt::format("PARK {}\n", id.hex());
}
std::string taken(const ConnId& id) {
  return fmt::format("TAKEN {}\n", id.hex());
}
std::string ready(const ConnId& id) {
  return fmt::format("READY {}\n", id.hex());
}

}  // namespace tunnel::protocol
