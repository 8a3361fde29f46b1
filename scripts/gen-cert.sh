#!/usr/bin/env bash
# Makes the TLS files for tunnel's port B with the openssl command line, and prints the client's
# flags. See usage() below, or run it with --help.
set -euo pipefail

prog=gen-cert.sh

usage() {
  cat <<EOF
usage: $prog [--name HOST]... [--days N] [--out DIR] [--ca] [--client NAME] [--force]
       $prog --pin-of CERT

Makes an EC P-256 key and a certificate for tunnel-server's port B, then prints the server's key
pin (sha256 of its public key) and the flags that use the files.

  --name HOST    a DNS name or IP address clients dial the server by; repeat for more. The first
                 one is the certificate's common name. Default: this machine's host name,
                 localhost, 127.0.0.1 and ::1.
  --days N       how long the certificates are valid, in days (default 365)
  --out DIR      where the files go (default ./tunnel-tls; created, mode 0700, if missing)
  --ca           make a small CA (ca.crt, ca.key) and sign the server certificate with it,
                 instead of a self-signed server certificate
  --client NAME  also make a client certificate with common name NAME (client.crt, client.key),
                 signed by the CA, for servers run with --tls-client-ca (implies --ca)
  --force        replace files that already exist (otherwise they are left alone: exit 1)
  --pin-of CERT  print the pin of an existing certificate, sha256:<hex>, and nothing else

Keys are written mode 0600. The pin is the one --tls-pin expects: the SHA-256 of the
certificate's public key in DER (SubjectPublicKeyInfo), so a certificate renewed with the same
key keeps its pin.
EOF
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

bad_usage() {
  echo "$prog: $*" >&2
  usage >&2
  exit 2
}

# sha256:<hex> of a certificate's public key, as tunnel::tls::spki_pin computes it.
pin_of() {
  local digest
  digest=$(openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER |
    openssl dgst -sha256 -r) || return 1
  printf 'sha256:%s\n' "${digest%% *}"
}

is_ip() {
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $1 == *:* ]]
}

names=()
days=365
out=./tunnel-tls
with_ca=false
client=""
force=false
pin_of_file=""

while (($#)); do
  case "$1" in
    --name)
      (($# >= 2)) || bad_usage "--name needs a value"
      names+=("$2")
      shift 2
      ;;
    --days)
      (($# >= 2)) || bad_usage "--days needs a value"
      days=$2
      shift 2
      ;;
    --out)
      (($# >= 2)) || bad_usage "--out needs a value"
      out=$2
      shift 2
      ;;
    --ca)
      with_ca=true
      shift
      ;;
    --client)
      (($# >= 2)) || bad_usage "--client needs a value"
      client=$2
      with_ca=true
      shift 2
      ;;
    --force)
      force=true
      shift
      ;;
    --pin-of)
      (($# >= 2)) || bad_usage "--pin-of needs a value"
      pin_of_file=$2
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      bad_usage "unknown argument: $1"
      ;;
  esac
done

command -v openssl >/dev/null 2>&1 || die "the openssl command is needed (Debian: apt-get install openssl)"

if [[ -n $pin_of_file ]]; then
  [[ -r $pin_of_file ]] || die "cannot read $pin_of_file"
  pin_of "$pin_of_file" 2>/dev/null || die "$pin_of_file: not a PEM certificate"
  exit 0
fi

[[ $days =~ ^[1-9][0-9]*$ ]] || bad_usage "--days must be a whole number of days, at least 1"
if [[ -n $client && ! $client =~ ^[A-Za-z0-9._-]{1,64}$ ]]; then
  bad_usage "--client NAME: 1 to 64 of A-Z a-z 0-9 . _ -"
fi
if ((${#names[@]} == 0)); then
  host=$(hostname 2>/dev/null || uname -n)
  names=("$host" localhost 127.0.0.1 ::1)
fi
# Each name once, in the order given.
declare -A seen=()
unique=()
for name in "${names[@]}"; do
  [[ $name =~ ^[A-Za-z0-9.:-]+$ ]] || bad_usage "--name $name: not a host name or IP address"
  [[ -n ${seen[$name]:-} ]] && continue
  seen[$name]=1
  unique+=("$name")
done
names=("${unique[@]}")

sans=""
for name in "${names[@]}"; do
  if is_ip "$name"; then entry="IP:$name"; else entry="DNS:$name"; fi
  sans+="${sans:+,}$entry"
done

files=(server.crt server.key)
if $with_ca; then files+=(ca.crt ca.key); fi
if [[ -n $client ]]; then files+=(client.crt client.key); fi
if ! $force; then
  for file in "${files[@]}"; do
    [[ -e $out/$file ]] && die "$out/$file exists: remove it, choose another --out, or add --force"
  done
fi

umask 077  # keys are born private; certificates are opened up below
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tunnel
[server_self]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = $sans
[server_signed]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $sans
[client_signed]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>"$work/err" ||
    die "openssl could not make a key: $(cat "$work/err")"
  chmod 600 "$1"
}

# sign NAME CN EXTENSIONS: a key and a certificate signed by the CA.
sign() {
  new_key "$out/$1.key"
  openssl req -new -config "$work/openssl.cnf" -key "$out/$1.key" -subj "/CN=$2" \
    -out "$work/$1.csr" 2>"$work/err" || die "openssl req failed: $(cat "$work/err")"
  openssl x509 -req -in "$work/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
    -extfile "$work/openssl.cnf" -extensions "$3" -out "$out/$1.crt" 2>"$work/err" ||
    die "openssl x509 failed: $(cat "$work/err")"
  chmod 644 "$out/$1.crt"
}

if $with_ca; then
  new_key "$out/ca.key"
  openssl req -new -x509 -config "$work/openssl.cnf" -extensions ca -key "$out/ca.key" \
    -subj "/CN=tunnel CA ${names[0]}" -days "$days" -sha256 -out "$out/ca.crt" 2>"$work/err" ||
    die "openssl req (CA) failed: $(cat "$work/err")"
  chmod 644 "$out/ca.crt"
  sign server "${names[0]}" server_signed
  if [[ -n $client ]]; then sign client "$client" client_signed; fi
else
  new_key "$out/server.key"
  openssl req -new -x509 -config "$work/openssl.cnf" -extensions server_self \
    -key "$out/server.key" -subj "/CN=${names[0]}" -days "$days" -sha256 \
    -out "$out/server.crt" 2>"$work/err" || die "openssl req failed: $(cat "$work/err")"
  chmod 644 "$out/server.crt"
fi

pin=$(pin_of "$out/server.crt")
trust="$out/server.crt"
$with_ca && trust="$out/ca.crt"

echo "$prog: wrote in $out, valid $days days, names ${sans//,/, }:"
for file in "${files[@]}"; do echo "  $file"; done
echo
echo "server key pin: $pin"
echo
echo "tunnel-server:"
echo "  --tls-cert $out/server.crt --tls-key $out/server.key${client:+ --tls-client-ca $out/ca.crt}"
echo "tunnel-client, verifying the server by its key pin:"
echo "  --tls --tls-pin $pin${client:+ --tls-cert $out/client.crt --tls-key $out/client.key}"
echo "or by its certificate ($([[ $trust == */ca.crt ]] && echo "the CA" || echo "self-signed"); --server must use one of the names above):"
echo "  --tls --tls-ca $trust${client:+ --tls-cert $out/client.crt --tls-key $out/client.key}"
if $with_ca; then
  echo
  echo "Keep ca.key offline if you can: whoever holds it can make certificates your clients trust."
fi
