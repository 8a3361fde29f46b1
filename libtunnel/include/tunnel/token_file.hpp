// The shared secret of the `auth` extension (docs/PROTOCOL.md), read from a file or a systemd
// credential and checked before a daemon starts: never from argv, never logged.
#pragma once

#include <string>
#include <string_view>

namespace tunnel {

// At least this much randomness: a token shorter than it is refused.
inline constexpr int kMinTokenBits = 128;

// The path a --token-file (or a TLS file option) names: a relative name is first looked for in
// $CREDENTIALS_DIRECTORY (systemd's LoadCredential=), then as given.
std::string resolve_token_path(std::string_view value);

// Reads the token: the file's content without its trailing line ends. Throws std::runtime_error
// with one line naming the file, what is wrong and the fix when the file is missing, unreadable,
// readable by group or others, empty, holds spaces or control characters, or holds fewer than
// kMinTokenBits bits (judged by the narrowest alphabet it fits: hex, base64, printable).
std::string read_token_file(const std::string& path);

// How many bits of randomness a token of this text can hold at most.
int token_bits(std::string_view token);

}  // namespace tunnel
