#!/usr/bin/env bash
# Regenerates the OpenSSL test vectors checked by signing/vectors_test.go.
#
# Usage: gen.sh [output-directory]   (default: the directory of this script)
#
# Everything is made from scratch with the openssl command line only: a root
# and an intermediate CA named like the health PKI (IGC-Santé), two
# prescriber certificates (RSA-2048 and ECDSA P-256) shaped like IGC-Santé
# person certificates, an empty CRL per CA, a CRLF MIME entity, and
# signatures of it by `openssl cms -sign` in every form a prescriber's
# software emits. MANIFEST lists each vector and the verdict Verify must give.
#
# Every certificate and CRL is valid from 2025-01-01 to 2125-01-01 so that
# the committed vectors do not expire. Private keys live in a temporary
# directory and are deleted on exit: the vectors are regenerated as a whole,
# never extended (a new run makes new keys, new certificates, new
# signatures). Running the script twice leaves the same set of files, with the
# same MANIFEST.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here}
mkdir -p "$out"
out=$(cd "$out" && pwd)

command -v openssl >/dev/null || { echo "gen.sh: openssl not found in PATH" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
new="$work/out" # outputs are built here and copied over only when all succeeded
mkdir "$new"

readonly START=20250101000000Z
readonly END=21250101000000Z
readonly EMAIL=dr.vector@mssante.test
readonly IDNPS=810101201234 # "8" + RPPS 10101201234

# --- CA configuration ----------------------------------------------------------
# `openssl ca` (not `openssl x509 -req`) because OpenSSL 3.0 sets arbitrary
# notBefore/notAfter and CRL dates only there.
for ca in root intermediate; do
	mkdir -p "$work/$ca/newcerts"
	: >"$work/$ca/index.txt"
	echo 1000 >"$work/$ca/crlnumber"
done
echo 01 >"$work/root/serial"
echo 1001 >"$work/intermediate/serial"

cat >"$work/openssl.cnf" <<CNF
[ ca_root ]
dir              = $work/root
database         = \$dir/index.txt
new_certs_dir    = \$dir/newcerts
serial           = \$dir/serial
crlnumber        = \$dir/crlnumber
default_md       = sha256
policy           = policy_health
unique_subject   = no
email_in_dn      = no
copy_extensions  = none
crl_extensions   = crl_ext

[ ca_intermediate ]
dir              = $work/intermediate
database         = \$dir/index.txt
new_certs_dir    = \$dir/newcerts
serial           = \$dir/serial
crlnumber        = \$dir/crlnumber
default_md       = sha256
policy           = policy_health
unique_subject   = no
email_in_dn      = no
copy_extensions  = none
crl_extensions   = crl_ext

# Subjects keep the requested order (-preserveDN below); every attribute the
# health PKI uses is allowed.
[ policy_health ]
countryName            = optional
organizationName       = optional
organizationalUnitName = optional
serialNumber           = optional
givenName              = optional
surname                = optional
title                  = optional
commonName             = supplied

[ req ]
distinguished_name = req_dn
[ req_dn ]

[ v3_root ]
basicConstraints       = critical, CA:true, pathlen:1
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ v3_intermediate ]
basicConstraints       = critical, CA:true, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

# An IGC-Santé signing certificate of a person: signature and
# non-repudiation, e-mail protection, the MSSanté address in the SAN.
[ v3_person ]
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature, nonRepudiation
extendedKeyUsage       = emailProtection
subjectAltName         = email:$EMAIL
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ crl_ext ]
authorityKeyIdentifier = keyid:always
CNF
export OPENSSL_CONF="$work/openssl.cnf"

# quiet CMD...: runs an openssl command whose stderr is chatter (key
# generation progress, `openssl ca` dialogue), showing it only on failure.
quiet() {
	"$@" 2>"$work/stderr.log" || {
		cat "$work/stderr.log" >&2
		echo "gen.sh: failed: $*" >&2
		exit 1
	}
}

# issue NAME CA_SECTION EXTENSIONS SUBJECT [ca args...]: CSR for $work/NAME.key, certificate to $work/NAME.pem.
issue() {
	local name=$1 section=$2 ext=$3 subj=$4
	shift 4
	openssl req -new -key "$work/$name.key" -subj "$subj" -out "$work/$name.csr"
	quiet openssl ca -batch -notext -name "$section" -extensions "$ext" \
		-startdate "$START" -enddate "$END" -preserveDN \
		-in "$work/$name.csr" -out "$work/$name.pem" "$@"
}

# --- PKI -----------------------------------------------------------------------
quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out "$work/root.key"
quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$work/intermediate.key"
quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out "$work/ecdsa.key"

issue root ca_root v3_root "/C=FR/O=MSSRELAY TEST/OU=IGC-SANTE TEST/CN=TEST AC RACINE IGC-SANTE ELEMENTAIRE" \
	-selfsign -keyfile "$work/root.key"
issue intermediate ca_root v3_intermediate "/C=FR/O=MSSRELAY TEST/OU=IGC-SANTE TEST/CN=TEST AC IGC-SANTE ELEMENTAIRE PERSONNES" \
	-cert "$work/root.pem" -keyfile "$work/root.key"
for k in rsa ecdsa; do
	issue "$k" ca_intermediate v3_person \
		"/C=FR/O=CABINET DU DR VECTOR/OU=MEDECINE GENERALE/title=Medecin/surname=VECTOR/givenName=Dr/serialNumber=$IDNPS/CN=$IDNPS\/VECTOR Dr" \
		-cert "$work/intermediate.pem" -keyfile "$work/intermediate.key"
done

# Empty CRLs with fixed dates (RFC 5280 5.1.2.4-5); the relay refuses a
# signer whose issuers publish none.
quiet openssl ca -gencrl -name ca_root -cert "$work/root.pem" -keyfile "$work/root.key" \
	-crl_lastupdate "$START" -crl_nextupdate "$END" -out "$new/root-crl.pem"
quiet openssl ca -gencrl -name ca_intermediate -cert "$work/intermediate.pem" -keyfile "$work/intermediate.key" \
	-crl_lastupdate "$START" -crl_nextupdate "$END" -out "$new/intermediate-crl.pem"

# Certificates without the text dump `openssl ca` puts in front.
openssl x509 -in "$work/root.pem" -out "$new/root.pem"
openssl x509 -in "$work/intermediate.pem" -out "$new/intermediate.pem"
openssl x509 -in "$work/rsa.pem" -out "$new/rsa-signer.pem"
openssl x509 -in "$work/ecdsa.pem" -out "$new/ecdsa-signer.pem"

# --- Content ---------------------------------------------------------------------
# A MIME entity as prescribing software signs it: CRLF line ends (RFC 8551
# 3.1.1 canonical form), a text part and a small FHIR part.
printf '%s\r\n' \
	'Content-Type: multipart/mixed; boundary="vector-boundary"' \
	'' \
	'--vector-boundary' \
	'Content-Type: text/plain; charset=us-ascii' \
	'' \
	'Ordonnance RX-VECTOR-0001' \
	'Amoxicilline 1 g, 2 fois par jour pendant 6 jours.' \
	'--vector-boundary' \
	'Content-Type: application/fhir+json' \
	'' \
	'{"resourceType":"Bundle","type":"document","identifier":{"value":"RX-VECTOR-0001"}}' \
	'--vector-boundary--' >"$new/content.eml"
# The same with one byte changed (the dose), to check against a detached
# signature of the original.
sed 's/Amoxicilline 1 g/Amoxicilline 9 g/' "$new/content.eml" >"$new/content-tampered.eml"
if cmp -s "$new/content.eml" "$new/content-tampered.eml" ||
	[ "$(wc -c <"$new/content.eml")" != "$(wc -c <"$new/content-tampered.eml")" ]; then
	echo "gen.sh: tampering did not change exactly one byte" >&2
	exit 1
fi

# --- Signatures --------------------------------------------------------------------
manifest="$new/MANIFEST"
cat >"$manifest" <<'HDR'
# OpenSSL test vectors: generated by gen.sh, checked by signing/vectors_test.go.
#
# file: the vector.
# form: der   = a CMS SignedData in DER (definite lengths);
#       ber   = a CMS SignedData in BER with indefinite lengths (openssl -stream);
#       smime = a whole S/MIME message as openssl writes it (bare LF line ends;
#               a mail transport turns them into CRLF before mime.Split).
# content: for a detached der signature, the file holding the signed bytes;
#       "-" when the content is inside the vector.
# chain: yes when the intermediate CA travels in the message (-certfile).
# verdict: ok, or the signing.Reason name Verify must refuse it with, when
#       verified with root.pem as anchor, intermediate.pem as intermediate,
#       both CRLs, at 2100-06-01, From dr.vector@mssante.test, RPPS 10101201234.
#
# file	form	content	chain	verdict
HDR

# sign KEY OUTPUT FORM CONTENT CHAIN VERDICT [extra openssl cms args...]
sign() {
	local key=$1 file=$2 form=$3 content=$4 chain=$5 verdict=$6
	shift 6
	local args=(cms -sign -binary -in "$new/content.eml"
		-signer "$new/$key-signer.pem" -inkey "$work/$key.key" -out "$new/$file")
	if [ "$chain" = yes ]; then
		args+=(-certfile "$new/intermediate.pem")
	fi
	openssl "${args[@]}" "$@"
	printf '%s\t%s\t%s\t%s\t%s\n' "$file" "$form" "$content" "$chain" "$verdict" >>"$manifest"
}

for k in rsa ecdsa; do
	for chain in yes no; do
		c=chain
		[ "$chain" = yes ] || c=nochain
		sign "$k" "$k-detached-$c.p7s" der content.eml "$chain" ok -md sha256 -outform DER
		sign "$k" "$k-opaque-$c.p7m" der - "$chain" ok -md sha256 -nodetach -outform DER
		sign "$k" "$k-opaque-ber-$c.p7m" ber - "$chain" ok -md sha256 -nodetach -stream -outform DER
		sign "$k" "$k-smime-detached-$c.eml" smime - "$chain" ok -md sha256 -outform SMIME \
			-from "Dr VECTOR <$EMAIL>" -to pharmacie.vector@mssante.test -subject "Ordonnance RX-VECTOR-0001"
		sign "$k" "$k-smime-opaque-$c.eml" smime - "$chain" ok -md sha256 -nodetach -outform SMIME \
			-from "Dr VECTOR <$EMAIL>" -to pharmacie.vector@mssante.test -subject "Ordonnance RX-VECTOR-0001"
	done
	# Refusals. SHA-1: RFC 8551 2.1 lets a receiver refuse it; the relay
	# does. -noattr: RFC 5652 5.3 makes signed attributes optional for
	# id-data, the relay requires them (policy: content-type and
	# message-digest always signed). Tampered: the detached signature of
	# content.eml checked against content-tampered.eml.
	# -keyid (accepted): the signer is named by subject key identifier,
	# SignerInfo version 3 (RFC 5652 5.3), as some Outlook versions also
	# write it; the verifier finds it among the message's certificates.
	sign "$k" "$k-sha1.p7s" der content.eml yes algorithm -md sha1 -outform DER
	sign "$k" "$k-noattr.p7s" der content.eml yes malformed -md sha256 -noattr -outform DER
	sign "$k" "$k-keyid.p7s" der content.eml yes ok -md sha256 -keyid -outform DER
	printf '%s\t%s\t%s\t%s\t%s\n' "$k-detached-chain.p7s" der content-tampered.eml yes bad-signature >>"$manifest"
done

# --- Install -----------------------------------------------------------------------
# Remove what the previous run made (the files its MANIFEST named), then copy.
if [ -f "$out/MANIFEST" ]; then
	while IFS=$'\t' read -r f _; do
		case $f in '' | '#'* | */* | .*) continue ;; esac # only plain names in $out
		rm -f -- "$out/$f"
	done <"$out/MANIFEST"
fi
cp -- "$new"/* "$out/"
echo "gen.sh: wrote $(ls "$new" | wc -l) files to $out"
