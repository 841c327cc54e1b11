#!/usr/bin/env bash
# bench/compare.sh — how mssrelay's accepted rate compares with Postfix's on
# this machine.
#
# It installs Debian's postfix (no configuration of the system instance),
# runs a throwaway Postfix instance on 127.0.0.1:$PORT from a temporary
# config directory (virtual Maildir delivery under the same temporary
# directory, no TLS), submits plain messages of the same size to it with
# `mssrelay bench -plain`, then starts a demo relay in a temporary data
# directory and submits signed prescriptions to it with `mssrelay bench`
# (STARTTLS + AUTH + S/MIME verification + durable filing). Both runs use the
# same number of messages and clients, once with reused connections and once
# with one connection per message. Everything it started is stopped and
# removed on exit.
#
# Needs root (apt-get, Postfix), Debian or Ubuntu, and the demo ports
# 2587/2465/2993/2143 and $PORT free.
#
# Environment: N (messages, default 2000), C (clients, 32), PORT (Postfix,
# 2525), MSSRELAY (a built binary; default: built from this checkout),
# STEP_TIMEOUT (seconds per step, 600).
set -euo pipefail

N=${N:-2000}
C=${C:-32}
PORT=${PORT:-2525}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
repo=$(cd "$(dirname "$0")/.." && pwd)

say() { printf '%s\n' "$*" >&2; }
die() { say "compare.sh: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (installs postfix and runs an instance of it)"
command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu)"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" 2587 2465 2993 2143; do
	port_free "$p" || die "port $p is in use: stop what listens there (or set PORT for Postfix)"
done

work=$(mktemp -d /tmp/mssrelay-compare.XXXXXX)
chmod 755 "$work"
relay_pid=""
pf_started=""
cleanup() {
	set +e
	if [ -n "$relay_pid" ]; then
		kill -TERM "$relay_pid" 2>/dev/null
		for _ in $(seq 1 40); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$relay_pid" 2>/dev/null
		wait "$relay_pid" 2>/dev/null
	fi
	if [ -n "$pf_started" ]; then
		timeout 60 postfix -c "$work/postfix" stop >/dev/null 2>&1
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Postfix and jq, without configuring or starting the system instance
# (debconf "No configuration": no /etc/postfix/main.cf, nothing started).
missing=()
command -v postconf >/dev/null || missing+=(postfix)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
	say "Installing ${missing[*]}..."
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	install() { DEBIAN_FRONTEND=noninteractive timeout "$STEP_TIMEOUT" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
	install || { timeout "$STEP_TIMEOUT" apt-get update -q >&2 && install; } || die "could not install ${missing[*]}"
fi
say "$(postconf -d mail_version 2>/dev/null)"

# 2. The mssrelay binary.
bin=${MSSRELAY:-}
if [ -z "$bin" ]; then
	say "Building mssrelay..."
	(cd "$repo" && timeout "$STEP_TIMEOUT" go build -o "$work/mssrelay" ./cmd/mssrelay) || die "go build failed"
	bin=$work/mssrelay
fi
"$bin" bench -h >/dev/null 2>&1 || die "$bin has no bench command"

# 3. A throwaway Postfix instance: its own config, queue, data and mail
# directories under $work, loopback only, no TLS, every recipient of
# bench.test delivered to one Maildir by virtual(8).
cfg=$work/postfix
mkdir -p "$cfg" "$work/spool" "$work/data" "$work/mail"
uid=$(id -u postfix) gid=$(id -g postfix)
chown postfix:postfix "$work/data" "$work/mail"
cp /usr/share/postfix/master.cf.dist "$cfg/master.cf" 2>/dev/null || cp /etc/postfix/master.cf "$cfg/master.cf" \
	|| die "no master.cf template"
# The SMTP service on $PORT, outside the chroot (its files are under $work).
sed -i -E "s/^smtp( +)inet( +[^ ]+){3}/$PORT inet n - n/" "$cfg/master.cf"
grep -q "^$PORT inet" "$cfg/master.cf" || die "could not set the SMTP port in master.cf"
cat >"$cfg/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $work/spool
data_directory = $work/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $work
maillog_file = $work/postfix.log
myhostname = bench.localhost
mydomain = bench.test
myorigin = \$mydomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No reverse DNS of 127.0.0.1 per connection: the comparison is about mail,
# not the resolver.
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
alias_maps =
alias_database =
biff = no
message_size_limit = 33554432
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $work/mail
virtual_mailbox_maps = static:rx/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
EOF
timeout 60 postfix -c "$cfg" check >&2 || die "postfix check failed"
say "Starting Postfix on 127.0.0.1:$PORT..."
timeout 60 postfix -c "$cfg" start >&2 || die "postfix did not start (see $work/postfix.log)"
pf_started=1
for _ in $(seq 1 40); do port_free "$PORT" || break; sleep 0.25; done
port_free "$PORT" && die "postfix is not listening on $PORT"

# 4. The demo relay.
say "Starting the demo relay in $work/relay..."
"$bin" -data "$work/relay" >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 120); do port_free 2587 || break; sleep 0.25; done
port_free 2587 && die "the relay is not listening on 2587 (see $work/relay.log)"

# 5. The runs. bench exits 1 when some message was not accepted: the
# report is still printed, and the rates below say how many.
run() { # label json-file bench-args...
	local label=$1 out=$2; shift 2
	say "  $label"
	(cd "$work" && timeout "$STEP_TIMEOUT" "$bin" bench -json -n "$N" -c "$C" -timeout "$((STEP_TIMEOUT - 30))s" "$@") >"$out" \
		|| say "    (bench reported a problem: $(jq -r '.smtp | "\(.accepted)/\(.messages) accepted, refused \(.refused), errors \(.errors)"' "$out" 2>/dev/null || echo "no report"))"
}
rate() { jq -r '.smtp.accepted_per_second | . * 10 | round / 10' "$1" 2>/dev/null || echo 0; }
p50() { jq -r '.smtp.data.p50_ms * 10 | round / 10' "$1" 2>/dev/null || echo "-"; }

say "Running N=$N C=$C..."
for pc in 0 1; do
	run "postfix, per-conn=$pc" "$work/pf-$pc.json" -plain -smtp "127.0.0.1:$PORT" \
		-from bench@bench.test -to rx@bench.test -per-conn "$pc"
	run "mssrelay, per-conn=$pc" "$work/rx-$pc.json" -data "$work/relay" -imap-phase=false -per-conn "$pc"
done

printf '\nN=%s messages, C=%s clients, %s, on %s (%s CPUs), load average %s\n' "$N" "$C" \
	"$(jq -r '.smtp | "\(.bytes / .messages / 1024 | round) KiB on average"' "$work/rx-0.json")" \
	"$(uname -n)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %22s %32s %8s\n' "connections" "postfix plain (msgs/s)" "mssrelay TLS+AUTH+S/MIME (msgs/s)" "ratio"
for pc in 0 1; do
	label="reused"
	[ "$pc" = 1 ] && label="one per message"
	pf=$(rate "$work/pf-$pc.json") rx=$(rate "$work/rx-$pc.json")
	ratio=$(awk -v a="$rx" -v b="$pf" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
	printf '%-26s %22s %32s %8s\n' "$label" "$pf (p50 $(p50 "$work/pf-$pc.json") ms)" \
		"$rx (p50 $(p50 "$work/rx-$pc.json") ms)" "$ratio"
done
delivered=$(find "$work/mail/rx" -type f 2>/dev/null | wc -l)
printf '\nPostfix had delivered %s messages to its Maildir when the runs ended (delivery runs behind acceptance).\n' "$delivered"
