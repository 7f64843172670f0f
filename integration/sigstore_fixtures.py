"""Sigstore test fixtures: a test PKI, loopback Fulcio and TSA servers, a test transparency log, and
the real cosign (2.5.0) as signer and as reference verifier.

`Sigstore(workdir, cosign)` makes its PKI with the openssl CLI: a Fulcio-style CA (P-384 root ->
P-384 intermediate with EKU codeSigning), a rogue CA of the same shape and names that no trusted root
names, an RFC 3161 TSA (root -> leaf with critical EKU timeStamping) and a P-256 log key. As a
context manager it serves, on one loopback port, Fulcio's v1 `POST /api/v1/signingCert` (as cosign
2.5.0 calls it) and a TSA at `POST /tsr`. Bundles are cosign's v0.3 (`--new-bundle-format`), made
with `--tlog-upload=false`; `add_tlog_entry` then gives one a Rekor v1 entry signed by the test log
key. No SCT can be made, so keyless verification always waives SCTs (`--insecure-ignore-sct`).
"""

import base64
import hashlib
import http.server
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import harness as h

COSIGN_PASSWORD = "thaw-test"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
LOG_NAME = "rekor.thaw.test"
LOG_ORIGIN = f"{LOG_NAME} - 4242424242"  # Rekor v1's checkpoint origin: "<host> - <tree id>"
LOG_TREE_SIZE = 7  # the test log's tree: ours is leaf LOG_LEAF_INDEX, the others are filler
LOG_LEAF_INDEX = 5
LOG_SHARD_START = 1_000_000  # Rekor v1's logIndex is global; the inclusion proof's is the shard's
PKI_LIFETIME = 10 * 365 * 86400
ROOT_EXTENSIONS = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"


def _openssl(*args, input=None):
    """Runs the openssl CLI; returns its stdout (bytes), raising with its stderr on failure."""
    p = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout


def _b64(data):
    return base64.b64encode(data).decode()


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _canonical(value):
    """RFC 8785 canonical JSON of `value` (sorted keys, no spaces; exact for the ASCII strings and
    integers used here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _pem(der):
    """A DER certificate as PEM."""
    text = _b64(der)
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""]).encode()


def _pem_der(pem):
    """The DER bytes of the first block of the PEM bytes `pem`."""
    return base64.b64decode("".join(pem.decode().split("-----")[2].split()))


# --- DER, just enough to set a certificate's validity -------------------------------------------

def _der_bounds(data, pos=0):
    """(start, end) of the content of the DER element at `pos`."""
    length, start = data[pos + 1], pos + 2
    if length & 0x80:
        n = length & 0x7F
        length, start = int.from_bytes(data[start:start + n], "big"), start + n
    return start, start + length


def _der_children(data):
    """The elements inside the constructed DER element `data`, each as its full encoding."""
    pos, end = _der_bounds(data)
    children = []
    while pos < end:
        stop = _der_bounds(data, pos)[1]
        children.append(data[pos:stop])
        pos = stop
    return children


def _der(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _utc_time(t):
    return _der(0x17, time.strftime("%y%m%d%H%M%SZ", time.gmtime(t)).encode())


def _with_validity(der, not_before, not_after, signer_key):
    """Certificate `der` with validity [not_before, not_after] (Unix seconds), signed again with
    `signer_key` (P-384, ECDSA-SHA384). OpenSSL 3.0's CLI can only start a validity now and count
    whole days; Fulcio's leaves last 10 minutes and tests need expired or not-yet-valid ones."""
    tbs, algorithm, _ = _der_children(der)
    fields = _der_children(tbs)  # version, serial, signature, issuer, validity, ...
    fields[4] = _der(0x30, _utc_time(not_before) + _utc_time(not_after))
    tbs = _der(0x30, b"".join(fields))
    signature = _openssl("dgst", "-sha384", "-sign", signer_key, input=tbs)
    return _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))


# --- RFC 6962 Merkle tree -----------------------------------------------------------------------

def _leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def _tree_hash(leaves):
    """RFC 6962 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _tree_hash(leaves[:k]) + _tree_hash(leaves[k:])).digest()


def _inclusion_path(index, leaves):
    """RFC 6962 PATH(index, leaves): the audit path, leaf side first."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return _inclusion_path(index, leaves[:k]) + [_tree_hash(leaves[k:])]
    return _inclusion_path(index - k, leaves[k:]) + [_tree_hash(leaves[:k])]


class Authority:
    """A CA or TSA made by `Sigstore`: the PEM paths of its certificates, root last, as a trusted
    root lists them, and the key of the first (the one that signs)."""

    def __init__(self, chain, key):
        self.chain = chain
        self.key = key

    def certificates_der(self):
        """The chain's certificates, DER, in chain order."""
        return [_pem_der(path.read_bytes()) for path in self.chain]


class Sigstore:
    """Test Sigstore infrastructure in `workdir`, with `cosign` as signer and reference verifier.
    Use as a context manager to serve Fulcio and the TSA (needed by keyless signing and by
    timestamps). Set `use_rogue_ca` to have Fulcio issue from the rogue CA, and `leaf_validity` to
    (start, end) seconds from issuance for the leaves Fulcio issues. The PKI is in attributes `ca`,
    `rogue_ca`, `tsa` (Authority), `tlog_key` (PEM path), `tlog_public_der` and `tlog_key_id`;
    everything is valid from `epoch` (a day before creation)."""

    def __init__(self, workdir, cosign):
        self.dir = Path(workdir) / "sigstore"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cosign = Path(cosign)
        self.use_rogue_ca = False
        self.leaf_validity = (0, 600)
        self.url = None
        self._server = None
        self._lock = threading.Lock()
        self._serial = 0
        self.epoch = int(time.time()) - 86400  # start of every CA's, the TSA's and the log's validity
        self.ca = self._ca("fulcio")
        self.rogue_ca = self._ca("rogue")
        self.tsa = self._tsa()
        self.tlog_key = self._key("tlog", "P-256")
        self.tlog_public_der = _openssl("pkey", "-in", self.tlog_key, "-pubout", "-outform", "DER")
        self.tlog_key_id = hashlib.sha256(self.tlog_public_der).digest()

    def __enter__(self):
        self._server = h.LoopbackHttpServer(self._handler())
        self.url = f"http://127.0.0.1:{self._server.port}"
        return self

    def __exit__(self, *exc):
        self._server.close()
        self._server = self.url = None
        return False

    # --- PKI ----------------------------------------------------------------------------------

    def _key(self, name, curve):
        path = self.dir / f"{name}.key.pem"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", path)
        return path

    def _certificate(self, name, subject, public_key, extensions, signer_key, signer_cert=None, validity=None):
        """Issues `name`.pem for the PEM public key file `public_key`, signed by the P-384
        `signer_key` with `signer_cert` (self-signed without one), valid for `validity` (Unix
        seconds; default the PKI's lifetime); `extensions` in openssl's extfile syntax."""
        ext = self.dir / f"{name}.ext"
        ext.write_text(extensions)
        issuer = ["-CA", signer_cert, "-CAkey", signer_key] if signer_cert else ["-key", signer_key]
        der = _openssl("x509", "-new", "-subj", subject, "-force_pubkey", public_key, *issuer, "-sha384",
                       "-set_serial", f"0x{secrets.token_hex(16)}", "-extfile", ext, "-outform", "DER")
        not_before, not_after = validity or (self.epoch, self.epoch + PKI_LIFETIME)
        path = self.dir / f"{name}.pem"
        path.write_bytes(_pem(_with_validity(der, not_before, not_after, signer_key)))
        return path

    def _public(self, key):
        path = key.with_name(key.name.replace(".key.pem", ".pub.pem"))
        _openssl("pkey", "-in", key, "-pubout", "-out", path)
        return path

    def _ca(self, name):
        """A Fulcio-style CA: root (P-384) -> intermediate (P-384, EKU codeSigning). The rogue CA
        gets the same names as the real one, so only signatures tell them apart."""
        root_key, key = self._key(f"{name}-root", "P-384"), self._key(f"{name}-intermediate", "P-384")
        root = self._certificate(f"{name}-root", "/O=thaw-test/CN=thaw-test Fulcio root", self._public(root_key),
                                 ROOT_EXTENSIONS, root_key)
        intermediate = self._certificate(
            f"{name}-intermediate", "/O=thaw-test/CN=thaw-test Fulcio intermediate", self._public(key),
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "extendedKeyUsage=codeSigning\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
            root_key, root)
        return Authority([intermediate, root], key)

    def _tsa(self):
        """The TSA: root (P-384) -> leaf (P-256, critical EKU timeStamping), and openssl's ts config."""
        root_key, key = self._key("tsa-root", "P-384"), self._key("tsa", "P-256")
        root = self._certificate("tsa-root", "/O=thaw-test/CN=thaw-test TSA root", self._public(root_key),
                                 ROOT_EXTENSIONS, root_key)
        leaf = self._certificate("tsa", "/O=thaw-test/CN=thaw-test TSA", self._public(key),
                                 "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                 "extendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\n"
                                 "authorityKeyIdentifier=keyid\n", root_key, root)
        (self.dir / "tsa-serial").write_text("01\n")
        (self.dir / "tsa.cnf").write_text(
            "[tsa]\ndefault_tsa = thaw\n[thaw]\n"
            f"serial = {self.dir / 'tsa-serial'}\nsigner_cert = {leaf}\ncerts = {root}\nsigner_key = {key}\n"
            "signer_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\ndigests = sha256, sha384, sha512\n"
            "accuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n")
        return Authority([leaf, root], key)

    def issue_certificate(self, public_key_pem, identity, issuer):
        """A Fulcio-style leaf for `public_key_pem`, then its chain, PEM: critical SAN `identity` (URI
        if it has a scheme, else email), the OIDC issuer in 1.3.6.1.4.1.57264.1.1 (raw) and .1.8
        (UTF8String), EKU codeSigning, valid for `leaf_validity` from now; by the rogue CA if
        `use_rogue_ca`."""
        ca = self.rogue_ca if self.use_rogue_ca else self.ca
        with self._lock:
            self._serial += 1
            name = f"leaf-{self._serial}"
        public_key = self.dir / f"{name}.pub.pem"
        public_key.write_bytes(public_key_pem)
        san = f"URI.1 = {identity}" if "://" in identity else f"email.1 = {identity}"
        now = int(time.time())
        path = self._certificate(
            name, "/", public_key,
            "subjectAltName=critical,@san\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            f"1.3.6.1.4.1.57264.1.1=DER:{issuer.encode().hex()}\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{issuer}\n"
            f"[san]\n{san}\n",  # a section, so that commas in the identity stay in it
            ca.key, ca.chain[0], (now + self.leaf_validity[0], now + self.leaf_validity[1]))
        return b"".join(cert.read_bytes() for cert in [path, *ca.chain])

    # --- loopback Fulcio and TSA --------------------------------------------------------------

    def _signing_cert(self, body, authorization):
        """Fulcio v1 `signingCert` for the request `body` and the bearer token: the certificate chain
        (PEM, leaf first) of the key in the request, for the token's `email` or else `sub`. No SCT
        header (cosign 2.5.0 takes an empty one)."""
        public_key = base64.b64decode(json.loads(body)["publicKey"]["content"])
        claims = json.loads(base64.urlsafe_b64decode(authorization.split()[-1].split(".")[1] + "=="))
        return self.issue_certificate(public_key, claims.get("email") or claims["sub"], claims["iss"])

    def _timestamp(self, query):
        """An RFC 3161 TimeStampResp for the DER TimeStampReq `query`, by `openssl ts -reply`."""
        with self._lock:  # openssl ts keeps its serial in a file
            return _openssl("ts", "-reply", "-config", self.dir / "tsa.cnf", "-queryfile", "/dev/stdin",
                            "-out", "/dev/stdout", input=query)

    def _handler(self):
        sigstore = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    if self.path == "/api/v1/signingCert":
                        reply = sigstore._signing_cert(body, self.headers.get("authorization", ""))
                        status, kind = 201, "application/pem-certificate-chain"
                    elif self.path == "/tsr":
                        status, kind, reply = 200, "application/timestamp-reply", sigstore._timestamp(body)
                    else:
                        status, kind, reply = 404, "text/plain", b"no such endpoint"
                except (RuntimeError, ValueError, KeyError, IndexError) as e:
                    status, kind, reply = 400, "text/plain", str(e).encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        return Handler

    # --- tokens, predicates, keys, trusted roots ----------------------------------------------

    @staticmethod
    def jwt(issuer, subject):
        """An ES256-shaped OIDC token cosign accepts (it never checks the signature): `iss`, `sub`,
        `aud: sigstore`, `exp`, and `email` (verified) when `subject` is an email address."""
        now = int(time.time())
        claims = {"iss": issuer, "sub": subject, "aud": "sigstore", "iat": now, "exp": now + 600}
        if "@" in subject and "://" not in subject:
            claims.update(email=subject, email_verified=True)
        header = {"alg": "ES256", "typ": "JWT"}
        return ".".join([_b64url(_canonical(header)), _b64url(_canonical(claims)), _b64url(secrets.token_bytes(64))])

    @staticmethod
    def slsa_predicate(path, builder_id):
        """Writes a SLSA provenance v1 predicate naming `builder_id` to `path`; returns the path."""
        predicate = {
            "buildDefinition": {
                "buildType": "https://thaw.test/build/v1",
                "externalParameters": {"source": "https://github.com/thaw-test/guests"},
                "internalParameters": {},
            },
            "runDetails": {"builder": {"id": builder_id}, "metadata": {"invocationID": "thaw-test-1"}},
        }
        Path(path).write_text(json.dumps(predicate, indent=2))
        return Path(path)

    def make_key_pair(self, directory, name):
        """A P-256 key pair by `cosign generate-key-pair`: (private, public) paths. The private key
        is cosign's encrypted format (password COSIGN_PASSWORD), the only one cosign 2.5.0's `--key`
        reads; the public key is a PEM SubjectPublicKeyInfo."""
        prefix = Path(directory) / name
        p = self._cosign("generate-key-pair", "--output-key-prefix", prefix)
        if p.returncode != 0:
            raise RuntimeError(f"cosign generate-key-pair failed: {p.stdout}{p.stderr}")
        return Path(f"{prefix}.key"), Path(f"{prefix}.pub")

    def write_trusted_root(self, path, *, ca=True, tsa=True, tlog=True):
        """Writes a trusted_root.json naming the test CA, TSA and log (each optional); no CT logs."""
        start = {"start": _rfc3339(self.epoch)}
        root = {"mediaType": TRUSTED_ROOT_MEDIA_TYPE}
        if tlog:
            root["tlogs"] = [{
                "baseUrl": f"https://{LOG_NAME}",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(self.tlog_public_der), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": start},
                "logId": {"keyId": _b64(self.tlog_key_id)},
            }]
        if ca:
            root["certificateAuthorities"] = [{
                "subject": {"organization": "thaw-test", "commonName": "thaw-test Fulcio"},
                "uri": "https://fulcio.thaw.test",
                "certChain": {"certificates": [{"rawBytes": _b64(der)} for der in self.ca.certificates_der()]},
                "validFor": start,
            }]
        if tsa:
            root["timestampAuthorities"] = [{
                "subject": {"organization": "thaw-test", "commonName": "thaw-test TSA"},
                "uri": "https://tsa.thaw.test",
                "certChain": {"certificates": [{"rawBytes": _b64(der)} for der in self.tsa.certificates_der()]},
                "validFor": start,
            }]
        Path(path).write_text(json.dumps(root, indent=2))
        return Path(path)

    # --- signing with cosign ------------------------------------------------------------------

    def _cosign(self, *args):
        env = dict(os.environ, COSIGN_PASSWORD=COSIGN_PASSWORD, COSIGN_YES="true", TUF_ROOT=str(self.dir / "tuf"))
        return subprocess.run([str(self.cosign), *map(str, args)], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)

    def _sign(self, command, file, out, material, timestamp):
        args = [command, *material, "--new-bundle-format", "--bundle", out, "--tlog-upload=false"]
        if timestamp:
            args += ["--timestamp-server-url", f"{self._require_url()}/tsr"]
        p = self._cosign(*args, file)
        if p.returncode != 0:
            raise RuntimeError(f"cosign {command} failed: {p.stdout}{p.stderr}")
        return Path(out)

    def _require_url(self):
        if self.url is None:
            raise RuntimeError("Fulcio and the TSA are served only inside `with Sigstore(...)`")
        return self.url

    def _keyless(self, identity, issuer):
        return ["--fulcio-url", self._require_url(), "--insecure-skip-verify",
                "--identity-token", self.jwt(issuer, identity)]

    def sign_keyless(self, file, out, identity, issuer, timestamp=True):
        """`cosign sign-blob` with a certificate from the loopback Fulcio; returns the bundle path."""
        return self._sign("sign-blob", file, out, self._keyless(identity, issuer), timestamp)

    def sign_key(self, file, keyfile, out, timestamp=False):
        """`cosign sign-blob --key` (a key from `make_key_pair`); returns the bundle path."""
        return self._sign("sign-blob", file, out, ["--key", keyfile], timestamp)

    def attest_keyless(self, file, predicate_path, out, identity, issuer, predicate_type="slsaprovenance1",
                       timestamp=True):
        """`cosign attest-blob` (in-toto statement in a DSSE envelope) with a Fulcio certificate.
        `predicate_type` is cosign's `--type`: a short name (slsaprovenance1, custom, ...) or a URI."""
        material = [*self._keyless(identity, issuer), "--predicate", predicate_path, "--type", predicate_type]
        return self._sign("attest-blob", file, out, material, timestamp)

    def attest_key(self, file, keyfile, predicate_path, out, predicate_type="slsaprovenance1", timestamp=False):
        """`cosign attest-blob --key`; see `attest_keyless`."""
        material = ["--key", keyfile, "--predicate", predicate_path, "--type", predicate_type]
        return self._sign("attest-blob", file, out, material, timestamp)

    # --- the test transparency log ------------------------------------------------------------

    def _log_sign(self, data):
        """ECDSA-SHA256 (DER) by the test log key."""
        return _openssl("dgst", "-sha256", "-sign", self.tlog_key, input=data)

    @staticmethod
    def _entry_body(bundle, verifier_pem, kind):
        """The Rekor v1 entry body (a dict) recording `bundle`'s signature by `verifier_pem`."""
        verifier = _b64(verifier_pem)
        if "messageSignature" in bundle:
            signature = bundle["messageSignature"]
            digest = base64.b64decode(signature["messageDigest"]["digest"]).hex()
            return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest}},
                "signature": {"content": signature["signature"], "publicKey": {"content": verifier}}}}
        envelope = bundle["dsseEnvelope"]
        payload_hash = {"algorithm": "sha256", "value": hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest()}
        envelope_hash = {"algorithm": "sha256", "value": hashlib.sha256(_canonical(envelope)).hexdigest()}
        sig = envelope["signatures"][0]["sig"]
        if kind == "intoto":
            return {"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
                "envelope": {"payloadType": envelope["payloadType"],
                             "signatures": [{"publicKey": verifier, "sig": _b64(sig.encode())}]},
                "hash": envelope_hash, "payloadHash": payload_hash}}}
        return {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": envelope_hash, "payloadHash": payload_hash,
            "signatures": [{"signature": sig, "verifier": verifier}]}}

    def _log_entry(self, body, integrated_time):
        """The bundle form of the test log's entry for `body` (a dict), integrated at `integrated_time`:
        signed entry timestamp, inclusion proof and checkpoint."""
        canonical_body = _canonical(body)
        log_index = LOG_SHARD_START + LOG_LEAF_INDEX
        promise = _canonical({"body": _b64(canonical_body), "integratedTime": integrated_time,
                              "logID": self.tlog_key_id.hex(), "logIndex": log_index})
        leaves = [_leaf_hash(b'{"thaw-test-filler":%d}' % i) for i in range(LOG_TREE_SIZE)]
        leaves[LOG_LEAF_INDEX] = _leaf_hash(canonical_body)
        root_hash = _tree_hash(leaves)
        note = f"{LOG_ORIGIN}\n{LOG_TREE_SIZE}\n{_b64(root_hash)}\n".encode()
        key_hint = self.tlog_key_id[:4]  # a signed note's key hint: SHA-256(DER public key)[:4]
        checkpoint = note.decode() + f"\n\u2014 {LOG_NAME} {_b64(key_hint + self._log_sign(note))}\n"
        return {
            "logIndex": str(log_index),
            "logId": {"keyId": _b64(self.tlog_key_id)},
            "kindVersion": {"kind": body["kind"], "version": body["apiVersion"]},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(self._log_sign(promise))},
            "inclusionProof": {
                "logIndex": str(LOG_LEAF_INDEX),
                "rootHash": _b64(root_hash),
                "treeSize": str(LOG_TREE_SIZE),
                "hashes": [_b64(node) for node in _inclusion_path(LOG_LEAF_INDEX, leaves)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(canonical_body),
        }

    def add_tlog_entry(self, bundle_path, integrated_time=None, *, public_key=None, kind="dsse"):
        """Rewrites the bundle at `bundle_path` to carry one Rekor v1 entry by the test log, integrated
        at `integrated_time` (Unix seconds, default now): a hashedrekord 0.0.1 body for a message
        signature; for a DSSE envelope dsse 0.0.1 (cosign 2.5.0's default) or, with kind="intoto",
        intoto 0.0.2; a signed entry timestamp; an RFC 6962 inclusion proof (leaf LOG_LEAF_INDEX of
        LOG_TREE_SIZE) and a signed checkpoint. A key bundle names its key only by hint: give the
        PEM public key file as `public_key`. Returns the entry (the bundle's JSON form)."""
        path = Path(bundle_path)
        bundle = json.loads(path.read_text())
        material = bundle["verificationMaterial"]
        if "certificate" in material:
            verifier_pem = _pem(base64.b64decode(material["certificate"]["rawBytes"]))
        elif public_key is not None:
            verifier_pem = Path(public_key).read_bytes()
        else:
            raise ValueError("a key bundle's log entry needs the public key (public_key=...)")
        when = int(time.time()) if integrated_time is None else int(integrated_time)
        entry = self._log_entry(self._entry_body(bundle, verifier_pem, kind), when)
        material["tlogEntries"] = [entry]
        path.write_text(json.dumps(bundle, indent=2))
        return entry

    # --- cosign as the reference verifier -----------------------------------------------------

    def _verify(self, command, file, bundle, trusted_root, key, identity, identity_regexp, issuer, tlog,
                timestamps, extra=()):
        args = [command, "--bundle", bundle, "--trusted-root", trusted_root, *extra]
        if key is not None:
            args += ["--key", key]
        else:
            args += ["--insecure-ignore-sct"]
            if identity is not None:
                args += ["--certificate-identity", identity]
            if identity_regexp is not None:
                args += ["--certificate-identity-regexp", identity_regexp]
            if issuer is not None:
                args += ["--certificate-oidc-issuer", issuer]
        if not tlog:
            args += ["--insecure-ignore-tlog"]
        stamps = json.loads(Path(bundle).read_text())["verificationMaterial"].get("timestampVerificationData", {})
        if timestamps and stamps.get("rfc3161Timestamps"):
            args += ["--use-signed-timestamps"]
        p = self._cosign(*args, file)
        return p.returncode == 0, p.stdout + p.stderr

    def cosign_verify_blob(self, file, bundle, trusted_root, *, key=None, identity=None, identity_regexp=None,
                           issuer=None, tlog=False, timestamps=True):
        """`cosign verify-blob`: (ok, output). Keyless waives SCTs; the log is ignored unless `tlog`;
        the bundle's RFC 3161 timestamps are used when it has some and `timestamps`."""
        return self._verify("verify-blob", file, bundle, trusted_root, key, identity, identity_regexp, issuer,
                            tlog, timestamps)

    def cosign_verify_attestation(self, file, bundle, trusted_root, *, key=None, identity=None,
                                  identity_regexp=None, issuer=None, tlog=False, timestamps=True,
                                  predicate_type=None):
        """`cosign verify-blob-attestation` (checks the statement's subject against `file`), as
        `cosign_verify_blob`. cosign 2.5.0 ignores `--type` with a bundle (GHSA-w6c6-c85g-mmv6)."""
        extra = ["--type", predicate_type] if predicate_type else []
        return self._verify("verify-blob-attestation", file, bundle, trusted_root, key, identity, identity_regexp,
                            issuer, tlog, timestamps, extra)
