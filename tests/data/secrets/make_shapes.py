"""Writes shapes.json: secrets in the formats real secret scanners detect, with random values.

Each shape is a ``text`` (the secret in a realistic context) and the ``secret`` whose bytes
must appear in no file the store writes (plus ``also``: other forms of it, e.g. decoded).
The formats follow gitleaks, detect-secrets and trufflehog rules, and the misses a fault
campaign found (issue 16 item 11). Seeded: running it again writes the same file.

    python tests/data/secrets/make_shapes.py
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

rng = random.Random(16)
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"
UPPER = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"
shapes: list[dict[str, object]] = []


def r(n: int, alphabet: str = ALNUM) -> str:
    """``n`` random characters of ``alphabet``."""
    return "".join(rng.choice(alphabet) for _ in range(n))


def add(name: str, source: str, text: str, secret: str, also: tuple[str, ...] = ()) -> None:
    """One shape; ``secret`` must occur in ``text``."""
    assert secret in text, name
    shapes.append({"name": name, "source": source, "text": text, "secret": secret, "also": list(also)})


def b64url(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def main() -> None:
    s = "AKIA" + r(16, UPPER)
    add("aws access key id", "gitleaks aws-access-token", f"export AWS_ACCESS_KEY_ID={s}", s)
    s = "ASIA" + r(16, UPPER)
    add("aws temporary key id", "gitleaks aws-access-token", f"temporary creds {s} expire soon", s)
    s = r(40, B64)
    add("aws secret access key", "detect-secrets AWSKeyDetector", f"aws_secret_access_key = {s}", s)
    s = "ghp_" + r(36)
    add("github pat in clone url", "gitleaks github-pat", f"git clone https://x-access-token:{s}@github.com/o/r.git", s)
    s = "gho_" + r(36)
    add("github oauth token", "gitleaks github-oauth", f"token {s}", s)
    s = "ghs_" + r(36)
    add("github app token", "gitleaks github-app-token", f"GITHUB_TOKEN={s}", s)
    s = "github_pat_" + r(22) + "_" + r(59)
    add("github fine-grained pat", "gitleaks github-fine-grained-pat", f"use {s} for the API", s)
    s = "glpat-" + r(20)
    add("gitlab pat", "gitleaks gitlab-pat", f"PRIVATE-TOKEN: {s}", s)
    s = "xoxb-" + r(11, string.digits) + "-" + r(12, string.digits) + "-" + r(24)
    add("slack bot token", "gitleaks slack-bot-token", f"slack client with {s}", s)
    s = "xoxp-" + r(11, string.digits) + "-" + r(11, string.digits) + "-" + r(32, HEX)
    add("slack user token", "gitleaks slack-user-token", f"SLACK: {s}", s)
    s = "T" + r(8, UPPER) + "/B" + r(10, UPPER) + "/" + r(24)
    add("slack webhook", "gitleaks slack-webhook-url", f"post to https://hooks.slack.com/services/{s} now", s)
    head = b64url({"alg": "HS256", "typ": "JWT"})
    s = f"{head}.{b64url({'sub': r(8), 'name': 'Jo'})}.{r(43, URLSAFE)}"
    add("jwt cookie", "gitleaks jwt", f"Set-Cookie: jwt={s}; Path=/", s)
    s = f"{head}.{b64url({'sub': r(6)})}.{r(43, URLSAFE)}"
    add("jwt in prose", "gitleaks jwt", f"the id token is {s} (expires in 1h)", s)
    lines = [r(64, B64) for _ in range(4)]
    body = "\n".join(lines)
    text = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    add("rsa private key", "gitleaks private-key", text, lines[1])
    lines = [r(70, B64) for _ in range(3)]
    body = "\n".join(lines)
    text = f"key file:\n-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
    add("openssh private key", "gitleaks private-key", text, lines[2])
    s = r(64, B64)
    pem = f"-----BEGIN PRIVATE KEY-----\\n{s}\\n-----END PRIVATE KEY-----\\n"
    text = f'{{"type": "service_account", "private_key": "{pem}"}}'
    add("private key in service account json", "detect-secrets PrivateKeyDetector", text, s)
    s = r(64, B64)
    text = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{s}\n-----END PGP PRIVATE KEY BLOCK-----"
    add("pgp private key block", "gitleaks private-key", text, s)
    s = r(64, B64)
    add("truncated private key", "trufflehog PrivateKey", f"-----BEGIN EC PRIVATE KEY-----\n{s}", s)
    s = "sk_live_" + r(24)
    add("stripe secret key", "gitleaks stripe-access-token", f"stripe.api_key = '{s}'", s)
    s = "rk_test_" + r(24)
    add("stripe restricted key", "gitleaks stripe-access-token", f"STRIPE {s}", s)
    s = "whsec_" + r(32)
    add("stripe webhook secret", "trufflehog Stripe", f"endpoint signing with {s}", s)
    s = "sk-proj-" + r(48)
    add("openai project key", "gitleaks openai-api-key", f"OPENAI_API_KEY={s}", s)
    s = "sk-ant-api03-" + r(93, URLSAFE) + "AA"
    add("anthropic key", "gitleaks anthropic-api-key", f"anthropic {s}", s)
    s = "AIza" + r(35, URLSAFE)
    text = f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={s}"
    add("google api key", "gitleaks gcp-api-key", text, s)
    s = "ya29." + r(60, URLSAFE)
    add("google oauth access token", "trufflehog GoogleOauth2", f"access {s}", s)
    s = "SG." + r(22, URLSAFE) + "." + r(43, URLSAFE)
    add("sendgrid key", "gitleaks sendgrid-api-token", f"sendgrid {s}", s)
    s = "npm_" + r(36)
    add("npm token", "gitleaks npm-access-token", f"//registry.npmjs.org/:_authToken={s}", s)
    s = "pypi-AgEIcHlwaS5vcmc" + r(60, URLSAFE)
    add("pypi token", "gitleaks pypi-upload-token", f"twine upload -p {s}", s)
    s = "hf_" + r(34, string.ascii_letters)
    add("hugging face token", "gitleaks huggingface-access-token", f"huggingface-cli login {s}", s)
    s = "dop_v1_" + r(64, HEX)
    add("digitalocean token", "gitleaks digitalocean-pat", f"doctl auth init -t {s}", s)
    s = "shpat_" + r(32, HEX)
    add("shopify token", "gitleaks shopify-access-token", f"shopify {s}", s)
    s = "SK" + r(32, HEX)
    add("twilio api key", "gitleaks twilio-api-key", f"twilio {s}", s)
    s = "key-" + r(32, string.ascii_lowercase + string.digits)
    add("mailgun key", "gitleaks mailgun-private-api-token", f"mailgun {s}", s)
    s = r(32, HEX) + "-us14"
    add("mailchimp key", "gitleaks mailchimp-api-key", f"mailchimp {s}", s)
    s = "sq0atp-" + r(22, URLSAFE)
    add("square token", "gitleaks square-access-token", f"square {s}", s)
    s = "dapi" + r(32, HEX)
    add("databricks token", "gitleaks databricks-api-token", f"databricks {s}", s)
    s = "hvs." + r(90, URLSAFE)
    add("vault token", "gitleaks vault-service-token", f"vault login {s}", s)
    s = "AGE-SECRET-KEY-1" + r(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
    add("age secret key", "gitleaks age-secret-key", f"# created: today\n{s}\n", s)
    s = r(10, string.digits) + ":AA" + r(33, URLSAFE)
    add("telegram bot token", "gitleaks telegram-bot-api-token", f"bot {s}", s)
    s = r(18, string.digits) + "/" + r(68, URLSAFE)
    add("discord webhook", "gitleaks discord-webhook", f"https://discord.com/api/webhooks/{s}", s)
    s = r(86, B64) + "=="
    text = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};EndpointSuffix=core.windows.net"
    add("azure storage account key", "detect-secrets AzureStorageKeyDetector", text, s)
    s = r(43, B64) + "="
    text = f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={s}"
    add("azure service bus key", "trufflehog AzureServiceBus", text, s)
    s = r(20)
    add("basic auth url", "detect-secrets BasicAuthDetector", f"postgresql://admin:{s}@db.internal:5432/prod", s)
    s = r(16)
    add("basic auth url, upper-case scheme", "fault campaign", f"fetch HTTPS://deploy:{s}@example.com/x", s)
    s = r(16)
    add("basic auth url, empty user", "fault campaign", f"redis://:{s}@cache:6379/0", s)
    s = r(12) + "@" + r(6)
    add("basic auth url, @ in password", "trufflehog URI", f"amqp://guest:{s}@mq.local/", s)
    s = r(40, B64)
    add("bearer header", "gitleaks generic bearer", f"curl -H 'Authorization: Bearer {s}' https://api", s)
    s = base64.b64encode(f"user:{r(12)}".encode()).decode()
    add("basic auth header", "trufflehog BasicAuth", f"Authorization: Basic {s}", s)
    s = r(24)
    add("?token= in a url", "fault campaign", f"GET https://api.example.com/v1/items?token={s}&page=2", s)
    s = r(24)
    add("?access_token= in a url", "gitleaks generic-api-key", f"https://graph.example.com/me?access_token={s}", s)
    s = r(40, HEX)
    text = f"https://bucket.s3.amazonaws.com/k?X-Amz-Credential=x&X-Amz-Signature={s}"
    add("signature in a presigned url", "trufflehog AWS presigned URL", text, s)
    s = r(30)
    add("token key", "docs/security.md", f'{{"token": "{s}"}}', s)
    s = r(14)
    add("db_password assignment", "fault campaign", f"db_password={s}", s)
    s = r(32, HEX)
    add("x-api-key header", "fault campaign", f"X-Api-Key: {s}", s)
    s = "Secret" + r(6)
    add("password=ab;Secret", "fault campaign", f"password=ab;{s}", s)
    s = "Secret" + r(6)
    add("password=a,Secret", "fault campaign", f"password=a,{s}", s)
    s = r(3)
    add("short password", "detect-secrets KeywordDetector", f"pwd: {s} (temporary)", s)
    s = r(12)
    add("quoted password with a space", "detect-secrets KeywordDetector", f'password = "ab {s}"', s)
    s = r(12)
    esc = "".join(f"\\u{ord(c):04x}" for c in s)
    add("u-escaped password in json", "fault campaign", f'{{"user": "bob", "password": "{esc}"}}', esc, (s,))
    s = r(12)
    esc = "".join(f"\\u{ord(c):04x}" for c in s)
    add("u-escaped assignment in json", "fault campaign", f'{{"note": "password={esc}"}}', esc, (s,))
    s = r(20)
    add("client secret in json", "gitleaks generic-api-key", json.dumps({"client_id": "app", "client_secret": s}), s)
    s = r(20)
    add("camel-case api key in json", "detect-secrets KeywordDetector", json.dumps({"apiKey": s, "q": "weather"}), s)
    s = r(20)
    text = json.dumps({"config": {"credentials": {"user": "svc", "pass": s}}})
    add("nested credentials in json", "trufflehog generic", text, s)
    s = r(20)
    add("password in yaml", "detect-secrets KeywordDetector", f"database:\n  host: db\n  password: {s}\n", s)
    s = r(20)
    add("secret key in an env file", "detect-secrets KeywordDetector", f"DJANGO_SECRET_KEY='{s}'\nDEBUG=0", s)
    s = r(20)
    add("escaped json inside text", "fault campaign", f'tool said {{\\"api_key\\": \\"{s}\\"}}', s)
    s = r(24)
    add("session cookie", "trufflehog generic", f"Cookie: sessionid={s}; theme=dark", s)
    about = (
        "Secrets the redactor must remove: each 'text' holds 'secret' (and its other forms in 'also'), "
        "whose bytes must appear in no file the store writes. Values are random, in the formats of "
        "gitleaks, detect-secrets and trufflehog rules; none is a real credential. Made by make_shapes.py."
    )
    out = Path(__file__).with_name("shapes.json")
    text = json.dumps({"about": about, "shapes": shapes}, indent=1, ensure_ascii=False) + "\n"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
