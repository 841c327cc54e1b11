#!/usr/bin/env python3
"""A mail client we did not write, driving the relay: Python's smtplib and
imaplib (standard library only).

Run by relay/clients_test.go (TestPythonClients). Parameters come from the
environment; the script prints one JSON object on stdout and the Go test
asserts on it. On an unexpected failure it still prints what it collected,
with "error" set, and exits 1.

Environment:
  MSS_CA           PEM file of the trusted root (the demo's development CA)
  MSS_SMTP         host:port of SMTP submission (STARTTLS)
  MSS_IMAPS        host:port of IMAP with implicit TLS
  MSS_IMAP         host:port of IMAP with STARTTLS
  MSS_SUBMIT_USER, MSS_SUBMIT_PASS   the prescriber's account
  MSS_FROM, MSS_TO                   envelope addresses
  MSS_USER, MSS_PASS                 the pharmacy's account (IMAP)
  MSS_MSG          file holding the first signed prescription (sent first)
  MSS_MSG2         file holding the second one (sent while the script IDLEs)
"""

import base64
import imaplib
import json
import os
import re
import smtplib
import ssl
import sys
import traceback

TIMEOUT = 30  # seconds, on every socket operation: the test must not hang


def hostport(value):
    host, _, port = value.rpartition(":")
    return host, int(port)


def tls_context(cafile):
    # Verify the chain to the demo root and the host name (the server
    # certificate names 127.0.0.1), with TLS 1.2 at least as MSSanté requires.
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def submit(ctx, env, msg_file):
    """Submit one message with STARTTLS + AUTH PLAIN; return the DATA reply."""
    host, port = hostport(env["MSS_SMTP"])
    with open(msg_file, "rb") as f:
        msg = f.read()
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as s:
        s.ehlo("python-smtplib.test")
        s.starttls(context=ctx)
        s.ehlo("python-smtplib.test")
        s.login(env["MSS_SUBMIT_USER"], env["MSS_SUBMIT_PASS"])
        code, reply = s.mail(env["MSS_FROM"])
        if code != 250:
            raise RuntimeError("MAIL FROM refused: %d %s" % (code, text(reply)))
        code, reply = s.rcpt(env["MSS_TO"])
        if code not in (250, 251):
            raise RuntimeError("RCPT TO refused: %d %s" % (code, text(reply)))
        # data() dot-stuffs and terminates; bytes are sent unchanged otherwise.
        code, reply = s.data(msg)
        return {"code": code, "text": text(reply), "tls_version": s.sock.version()}


def auth_before_tls(env):
    """Send AUTH PLAIN on the plaintext connection ourselves: smtplib's
    login() would refuse client-side since AUTH is not advertised, and we
    want the server's answer."""
    host, port = hostport(env["MSS_SMTP"])
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as s:
        s.ehlo("python-smtplib.test")
        creds = ("\0%s\0%s" % (env["MSS_SUBMIT_USER"], env["MSS_SUBMIT_PASS"])).encode()
        code, reply = s.docmd("AUTH", "PLAIN " + base64.b64encode(creds).decode())
        return {"advertised": s.has_extn("auth"), "starttls": s.has_extn("starttls"),
                "code": code, "text": text(reply)}


LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.+)$')


def parse_list(lines):
    boxes = []
    for line in lines:
        if isinstance(line, tuple):  # a literal name: not expected here
            line = line[0] + line[1]
        m = LIST_RE.match(line)
        if not m:
            raise RuntimeError("unparsable LIST line %r" % line)
        name = m.group("name")
        if name.startswith(b'"') and name.endswith(b'"'):
            name = name[1:-1]
        boxes.append({"name": text(name), "attrs": text(m.group("attrs")).split()})
    return boxes


def ok(result, what):
    typ, data = result
    if typ != "OK":
        raise RuntimeError("%s: %s %r" % (what, typ, data))
    return data


def seqs(data):
    return [int(n) for n in data[0].split()]


def idle_until_exists(imap, ctx, env, msg_file, tag=b"PYIDLE1"):
    """IDLE (RFC 2177) by hand: imaplib in 3.11 has no idle(). Send the
    command, wait for the continuation, submit a prescription, read until
    the untagged EXISTS, then DONE and the tagged completion."""
    out = {"untagged": []}
    imap.send(tag + b" IDLE\r\n")
    cont = imap.readline()
    out["continuation"] = text(cont).rstrip("\r\n")
    if not cont.startswith(b"+"):
        raise RuntimeError("IDLE not accepted: %r" % cont)
    out["submit"] = submit(ctx, env, msg_file)
    while True:
        line = imap.readline()
        if not line:
            raise RuntimeError("connection closed while idling")
        out["untagged"].append(text(line).rstrip("\r\n"))
        m = re.match(rb"^\* (\d+) EXISTS\r?\n$", line)
        if m:
            out["exists"] = int(m.group(1))
            break
    imap.send(b"DONE\r\n")
    while True:
        line = imap.readline()
        if not line:
            raise RuntimeError("connection closed after DONE")
        if line.startswith(tag + b" "):
            out["done"] = text(line[len(tag) + 1:]).rstrip("\r\n")
            break
        out["untagged"].append(text(line).rstrip("\r\n"))
    return out


def imaps_session(ctx, env, res):
    host, port = hostport(env["MSS_IMAPS"])
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=TIMEOUT)
    r = res["imap"] = {"tls_version": imap.sock.version()}
    ok(imap.login(env["MSS_USER"], env["MSS_PASS"]), "LOGIN")
    # The greeting's capabilities are the pre-login ones: ask again.
    r["capabilities"] = text(ok(imap.capability(), "CAPABILITY")[0]).split()
    r["mailboxes"] = parse_list(ok(imap.list(), "LIST"))

    r["select"] = int(ok(imap.select("INBOX"), "SELECT")[0])
    r["search_all"] = seqs(ok(imap.search(None, "ALL"), "SEARCH ALL"))
    r["search_unseen"] = seqs(ok(imap.search(None, "UNSEEN"), "SEARCH UNSEEN"))

    data = ok(imap.fetch("1", "(BODY.PEEK[])"), "FETCH BODY.PEEK[]")
    if not data or not isinstance(data[0], tuple):
        raise RuntimeError("FETCH returned no literal: %r" % data)
    r["body_b64"] = base64.b64encode(data[0][1]).decode()
    # PEEK must leave \Seen alone (RFC 3501 §6.4.5).
    r["unseen_after_peek"] = seqs(ok(imap.search(None, "UNSEEN"), "SEARCH UNSEEN"))

    ok(imap.store("1", "+FLAGS", r"(\Seen $Dispensed)"), "STORE")
    data = ok(imap.fetch("1", "(FLAGS)"), "FETCH FLAGS")
    r["flags"] = [text(f) for f in imaplib.ParseFlags(data[0])]
    r["unseen_after_store"] = seqs(ok(imap.search(None, "UNSEEN"), "SEARCH UNSEEN"))

    r["idle"] = idle_until_exists(imap, ctx, env, env["MSS_MSG2"])
    r["search_all_after_idle"] = seqs(ok(imap.search(None, "ALL"), "SEARCH ALL"))

    typ, data = imap.logout()
    r["logout"] = typ


def starttls_session(ctx, env, res):
    host, port = hostport(env["MSS_IMAP"])
    imap = imaplib.IMAP4(host, port, timeout=TIMEOUT)
    r = res["starttls"] = {"capabilities_before": list(imap.capabilities)}
    try:
        imap.login(env["MSS_USER"], env["MSS_PASS"])
        r["plain_login"] = "accepted"
    except imaplib.IMAP4.error as e:
        r["plain_login"] = "refused: " + text(e)
    imap.starttls(ssl_context=ctx)
    r["tls_version"] = imap.sock.version()
    r["capabilities_after"] = list(imap.capabilities)
    ok(imap.login(env["MSS_USER"], env["MSS_PASS"]), "LOGIN after STARTTLS")
    r["login"] = "OK"
    r["select"] = int(ok(imap.select("INBOX", readonly=True), "EXAMINE")[0])
    imap.logout()


def main():
    env = os.environ
    ctx = tls_context(env["MSS_CA"])
    res = {}
    try:
        res["smtp_auth_before_tls"] = auth_before_tls(env)
        res["smtp"] = submit(ctx, env, env["MSS_MSG"])
        imaps_session(ctx, env, res)
        starttls_session(ctx, env, res)
    except Exception:  # report what we have, and why we stopped
        res["error"] = traceback.format_exc()
    json.dump(res, sys.stdout)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
