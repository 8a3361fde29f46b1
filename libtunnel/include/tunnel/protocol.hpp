// Wire protocol v1 (docs/PROTOCOL.md): parsing and formatting of the lines exchanged on port B.
// Pure functions over strings; the sockets live elsewhere.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tunnel/conn_id.hpp"

namespace tunnel::protocol {

inline constexpr std::string_view kVersionTag = "TUNNEL/1";

// Error codes a server may answer a control hello with.
inline constexpr std::string_view kErrBusy = "busy";
inline constexpr std::string_view kErrBadRequest = "bad-request";
inline constexpr std::string_view kErrVersion = "version";
inline constexpr std::string_view kErrAuth = "auth";  // the auth extension: missing or wrong proof

// The services extension (docs/PROTOCOL.md, "Services"): a client serves named services, and NEW
// says which one. Its feature word, the most services one session may SERVE (and one config file
// may hold), and the reasons a REFUSED line gives.
inline constexpr std::string_view kServicesFeature = "services";
inline constexpr size_t kMaxServices = 2048;
inline constexpr std::string_view kRefusedUnknown = "unknown";         // not in the server's config
inline constexpr std::string_view kRefusedNotAllowed = "not-allowed";  // not listed for this client
inline constexpr std::string_view kRefusedAlreadyServed = "already-served";  // SERVE'd twice
inline constexpr std::string_view kRefusedRemoved = "removed";  // a reload removed the service
// The pool extension (docs/PROTOCOL.md, "Warm pool"): the client keeps data connections open in
// advance and the server hands an external connection to one of them at once. Its feature word and
// the most a client may ask for in `POOL <n>`.
inline constexpr std::string_view kPoolFeature = "pool";
inline constexpr size_t kMaxPoolRequest = 1024;
// A service name: the grammar of a client name (1 to 64 of A-Z a-z 0-9 . _ -).
bool is_service_name(std::string_view word);

// What a first line on B says it is, read from its second word even when the rest is malformed:
// the server answers a bad control hello with ERR but closes a bad data hello without a word.
enum class HelloKind { control, data, unknown };

// A line that breaks the grammar. `code` is one of the kErr* words, for the answer to a hello.
struct Malformed {
  std::string code;
  std::string reason;
  HelloKind claimed = HelloKind::unknown;  // parse_hello only
};

// --- first line of a B connection ---
struct ControlHello {
  std::vector<std::string> features;
};
struct DataHello {
  ConnId id;
  std::string proof;  // auth extension: 64 hex digits, or empty when the line carries none
};
using Hello = std::variant<ControlHello, DataHello, Malformed>;
Hello parse_hello(std::string_view line);

// --- lines on the control connection ---
enum class Verb {
  ok,
  err,
  new_conn,
  close_conn,
  fail,
  ping,
  pong,
  auth_challenge,  // auth extension, server -> client: AUTH-CHALLENGE <nonce>
  auth_proof,      // auth extension, client -> server: AUTH-PROOF <name> <nonce> <proof>
  auth_ok,         // auth extension, server -> client: AUTH-OK <proof>
  serve,           // services extension, client -> server: SERVE <service>
  serving,         // services extension, server -> client: SERVING <service>
  refused,         // services extension, server -> client: REFUSED <service> <reason>
  pool,            // pool extension, client -> server: POOL <n>
  park,            // pool extension, server -> client: PARK <id>
  taken,           // pool extension, client -> server on a pooled connection: TAKEN <id>
  ready,           // pool extension, client -> server on a pooled connection: READY <id>
  unknown,
};
struct Message {
  Verb verb = Verb::unknown;
  ConnId id;                          // NEW, CLOSE, FAIL, PARK, TAKEN, READY
  size_t count = 0;                   // POOL
  std::string service;                // NEW (services extension; empty without), SERVE, SERVING,
                                      // REFUSED
  std::string word;                   // FAIL reason, PING/PONG token, ERR code, unknown verb,
                                      // AUTH-PROOF name, REFUSED reason
  std::string text;                   // ERR text
  std::vector<std::string> features;  // OK
  std::string nonce;                  // AUTH-CHALLENGE, AUTH-PROOF
  std::string proof;                  // AUTH-PROOF, AUTH-OK
};
using Parsed = std::variant<Message, Malformed>;
Parsed parse_message(std::string_view line);

// Every formatter returns the whole line including its `\n`.
std::string control_hello(const std::vector<std::string>& features);
std::string data_hello(const ConnId& id, std::string_view proof = {});
std::string ok(const std::vector<std::string>& features);
std::string err(std::string_view code, std::string_view text);
// `service` empty: the core `NEW <id>`; otherwise `NEW <id> <service>` (services extension).
std::string new_conn(const ConnId& id, std::string_view service = {});
std::string close_conn(const ConnId& id);
std::string fail(const ConnId& id, std::string_view reason);
std::string ping(std::string_view token);
std::string pong(std::string_view token);
std::string auth_challenge(std::string_view nonce);
std::string auth_proof(std::string_view name, std::string_view nonce, std::string_view proof);
std::string auth_ok(std::string_view proof);
std::string serve(std::string_view service);
std::string serving(std::string_view service);
std::string refused(std::string_view service, std::string_view reason);
std::string pool(size_t count);
std::string park(const ConnId& id);
std::string taken(const ConnId& id);
std::string ready(const ConnId& id);

// A PING/PONG token or FAIL reason: 1 to 32 printable, non-space ASCII characters.
bool is_token(std::string_view word);

}  // namespace tunnel::protocol
