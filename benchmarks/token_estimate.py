"""Compare gwctl's offline token estimate with exact BPE counts.

gwctl never downloads a tokenizer; ``gwctl.core.tokens`` estimates prompt
sizes from characters and word/number/punctuation runs. This script measures
how that estimate compares with real BPE tokenizers on a varied sample
(English prose, code, JSON, CJK, other scripts, numbers, base64, emoji ...)
that it generates itself, and prints a table per encoding: mean ratio
estimate/exact, p5/p95 of the ratio, the share of samples over-estimated and
the worst over-estimate.

The exact counts come from the ``quicktok-v1`` package (PyPI; exact
cl100k_base / o200k_base / Llama-3 / Qwen3 BPE with bundled vocabularies,
no download). It is not a gwctl dependency; run this in a throwaway venv:

    python -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install quicktok-v1
    /tmp/tokvenv/bin/python benchmarks/token_estimate.py [--samples N] [--seed S]

Exit status 1 when any encoding is over-estimated on more than 1 % of the
samples or by more than 10 % on any sample (the estimator's contract:
err on the low side).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import string
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from gwctl.core.tokens import estimate_text_tokens  # noqa: E402

ENCODINGS = ("cl100k_base", "o200k_base", "llama3", "qwen3")

ENGLISH = """\
The gateway sits between a team's agents and the models they call. Every request
passes through it once, and on the way it is checked, routed and priced. When a
request asks for more output than the model can produce, the gateway answers at
once with a clear error instead of letting the upstream server fail half-way.
Operators keep the whole configuration in a single file that lives in version
control, so a change to a price or a limit is reviewed like any other change.
It's not glamorous work, but it saves money: nobody wants to discover, at the end
of the month, that an experiment ran a thousand long prompts against the most
expensive model they had. We've seen teams cut their bill by a third simply by
looking at which agent sent what, and when. Isn't that worth an afternoon?
Meanwhile, the on-call engineer appreciates a dry-run that explains, in plain
words, why a request would be rejected: "max_tokens 9000 is above the model's
maximum of 4096". Short sentences help. So do examples, tables and sensible defaults.
Internationalization, interoperability and counterintuitive misconfigurations are
long words that a tokenizer splits into several pieces; short ones rarely are.
"""

GERMAN_FRENCH_SPANISH = """\
Die Konfiguration wird in einer einzigen Datei gespeichert, die versioniert wird.
Geschwindigkeitsbegrenzungsüberschreitung ist ein sehr langes deutsches Wort.
La passerelle vérifie chaque requête avant de la transmettre au modèle choisi.
Les développeurs préfèrent des messages d'erreur précis et des exemples concrets.
El servidor rechaza la solicitud cuando el presupuesto de salida es demasiado alto.
¿Dónde está la configuración? Está en el archivo, como siempre, señor Muñoz.
"""

CYRILLIC_GREEK = """\
Шлюз проверяет каждый запрос перед отправкой модели и сообщает об ошибке сразу.
Конфигурация хранится в одном файле, который находится под контролем версий.
Достопримечательности Санкт-Петербурга привлекают туристов со всего мира.
Высокопроизводительные вычислительные системы широко используются для моделирования климатических изменений.
Η πύλη ελέγχει κάθε αίτημα πριν το προωθήσει στο μοντέλο που επιλέχθηκε.
"""

ARABIC_HEBREW_HINDI = """\
تتحقق البوابة من كل طلب قبل إرساله إلى النموذج المختار وتعيد خطأ واضحا.
השער בודק כל בקשה לפני שהוא מעביר אותה למודל שנבחר ומחזיר שגיאה ברורה.
गेटवे हर अनुरोध को चुने गए मॉडल तक भेजने से पहले जाँचता है और स्पष्ट त्रुटि लौटाता है।
ประตูทางเข้าตรวจสอบทุกคำขอก่อนส่งต่อไปยังโมเดลที่เลือก
"""

CJK = """\
网关在将每个请求转发给所选模型之前都会进行检查，如果输出预算超过模型的上限，就会立即返回清晰的错误信息。
运维人员把全部配置保存在一个文件里，并纳入版本控制，这样价格或限制的修改就能像其他代码一样被审查。
ゲートウェイは、選択されたモデルにリクエストを転送する前に、すべてのリクエストを確認します。
設定はひとつのファイルにまとめられ、バージョン管理の下で変更がレビューされます。カタカナのテキストも含めます。
게이트웨이는 선택한 모델로 요청을 전달하기 전에 모든 요청을 확인하고 명확한 오류를 즉시 반환합니다.
운영자는 전체 구성을 하나의 파일에 보관하며 가격이나 한도의 변경도 다른 변경처럼 검토됩니다.
在分布式系统中，负载均衡器负责将请求分发到多个后端服务器，以提高系统的可用性和吞吐量。常见的算法包括轮询、加权轮询、最少连接数以及一致性哈希。
クラウドネイティブなアーキテクチャでは、マイクロサービス、コンテナ、オーケストレーション、サービスメッシュなどのテクノロジーが使われます。
분산 시스템에서 로드 밸런서는 여러 백엔드 서버로 요청을 분산하여 시스템의 가용성과 처리량을 높이는 역할을 합니다.
"""

PYTHON_CODE = '''\
def price_request(entry: CatalogEntry, usage: Mapping[str, int]) -> Decimal | None:
    """Return the exact cost of one request, or None when it is unbilled."""
    if entry is None:
        return None
    total = Decimal(0)
    for kind, count in usage.items():
        price = entry.prices.get(kind)
        if price is None or count <= 0:
            continue
        total += price * count  # exact: Decimal * int
    return total.quantize(Decimal("0.000001"))


class RouteTable:
    def __init__(self, routes):
        self._by_key = {(r.agent, r.model_name): r for r in routes}

    def lookup(self, agent: str | None, model: str) -> "Route | None":
        for key in ((agent, model), (agent.split("/")[0] if agent else None, model)):
            if key in self._by_key:
                return self._by_key[key]
        return None
'''

JS_CODE = """\
export async function forward(req, res, { upstream, headers, timeoutMs = 30000 }) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(upstream + req.url, {
      method: req.method,
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify(req.body),
      signal: controller.signal,
    });
    for await (const chunk of response.body) res.write(chunk);
  } catch (err) {
    res.status(502).json({ error: { message: `upstream unreachable: ${err.message}` } });
  } finally {
    clearTimeout(timer);
  }
}
"""

MARKDOWN_LOGS = """\
## Release notes — v0.4.2

* **Fixed**: `gwctl route dry-run` now prints the upstream URL (#412).
* **Changed**: prices accept `3.0e-6` as well as `0.000003`.
> Note: the activity log schema moved to version 7; run `gwctl activity migrate`.

| source | model        | requests | cost (USD)   |
|--------|--------------|---------:|-------------:|
| local  | llama-3.1-8b |   12,408 |     4.218330 |
| corp   | qwen3-32b    |    3,115 |    17.004100 |

2024-06-01T12:00:03.118Z INFO  proxy request_id=7f3c9e2a status=200 latency_ms=812 model=local/llama
2024-06-01T12:00:04.907Z WARN  proxy request_id=80aa1b07 status=400 code=max_output param=max_tokens
2024-06-01T12:00:05.001Z ERROR proxy request_id=80aa1b08 upstream=https://10.0.0.12:8443/v1 err="connection reset"
See https://gateway.example/docs/catalog?section=limits&lang=en#context-size for details.
"""

SQL_HTML_YAML = """\
SELECT a.source, a.model, COUNT(*) AS requests, SUM(a.cost_usd) AS cost
FROM activity AS a WHERE a.created_at >= NOW() - INTERVAL '7 days' AND a.status < 500
GROUP BY a.source, a.model HAVING COUNT(*) > 10 ORDER BY cost DESC NULLS LAST LIMIT 50;
<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Gateway status</title>
<link rel="stylesheet" href="/static/app.css?v=3"></head><body class="dark"><div id="root" data-theme='dark'>
<h1>Status</h1><p>All systems <strong>operational</strong>.</p><ul><li><a href="https://example.com/a?b=c&amp;d=e">Docs</a></li></ul></div></body></html>
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gwctl-proxy
  labels: {app: gwctl, tier: edge}
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: proxy
          image: registry.example.com/gwctl:0.1.0
          args: ["proxy", "--host", "0.0.0.0", "--port", "4000"]
          resources: {limits: {cpu: "500m", memory: 256Mi}}
"""

RUST_LATEX = r"""impl<'a, T: Clone + Send + 'static> Iterator for Chunks<'a, T> {
    type Item = &'a [T];
    fn next(&mut self) -> Option<Self::Item> {
        if self.v.is_empty() { return None; }
        let (head, tail) = self.v.split_at(self.size.min(self.v.len()));
        self.v = tail;
        Some(head)
    }
}
\begin{equation} \mathcal{L}(\theta) = -\sum_{i=1}^{N} \log p_\theta(x_i \mid x_{<i}) + \lambda \lVert \theta \rVert_2^2 \end{equation}
where $\lambda \geq 0$ controls regularisation and $N$ is the sequence length.
"""

CHAT_LEGAL = """\
User: hey, can u help me fix my docker-compose? it keeps saying "port is already allocated" :(
Assistant: Sure! Run `lsof -i :8080` (macOS/Linux) to find what's using the port, then stop it or change the mapping to "8081:8080".
User: ok did that... now it says permission denied?? wtf
Assistant: That's usually the Docker socket: add your user to the `docker` group (`sudo usermod -aG docker $USER`) and log in again.
Notwithstanding the foregoing, the Licensee shall indemnify, defend and hold harmless the Licensor and its affiliates from
and against any and all claims, liabilities, damages, losses, costs and expenses (including reasonable attorneys' fees)
arising out of or relating to the Licensee's unauthorized redistribution, sublicensing or commercialization of the Software.
"""

EMOJI_TEXT = """\
Great job team 🎉🎉 the deploy went fine 👍 but latency is up 📈 — let's look 👀 tomorrow ☕.
Status: ✅ routing ✅ pricing ❌ activity log (disk full 💾) ⚠️ retry later 🙏
🔥🔥🔥 🚀🚀 👍👍👍👍 😂😂😂 ❤️❤️ 🇺🇸🇫🇷🇯🇵 👨‍👩‍👧‍👦
================================================================================
--------------------------------------------------------------------------------
"""

CORPORA = {
    "english": ENGLISH,
    "european": GERMAN_FRENCH_SPANISH,
    "cyrillic_greek": CYRILLIC_GREEK,
    "arabic_hebrew_hindi_thai": ARABIC_HEBREW_HINDI,
    "cjk": CJK,
    "python": PYTHON_CODE,
    "javascript": JS_CODE,
    "markdown_logs": MARKDOWN_LOGS,
    "sql_html_yaml": SQL_HTML_YAML,
    "rust_latex": RUST_LATEX,
    "chat_legal": CHAT_LEGAL,
    "emoji": EMOJI_TEXT,
}


def generated(kind: str, rng: random.Random) -> str:
    """Texts made on the fly: JSON, numbers, base64, hex ids, random words, whitespace."""
    if kind == "json":

        def value(depth: int):
            r = rng.random()
            if depth > 2 or r < 0.3:
                return rng.choice(
                    [
                        rng.randint(-(10**6), 10**9),
                        round(rng.uniform(-1e3, 1e3), rng.randint(0, 6)),
                        rng.choice([True, False, None]),
                        " ".join(rng.choice(ENGLISH.split()) for _ in range(rng.randint(1, 6))),
                    ]
                )
            if r < 0.65:
                return {
                    rng.choice(
                        [
                            "id",
                            "name",
                            "type",
                            "content",
                            "role",
                            "max_tokens",
                            "items",
                            "userId",
                            "created_at",
                            "tool_calls",
                            "arguments",
                        ]
                    )
                    + str(i): value(depth + 1)
                    for i in range(rng.randint(1, 5))
                }
            return [value(depth + 1) for _ in range(rng.randint(1, 4))]

        indent = rng.choice([None, 2, 4])
        return json.dumps(value(0), indent=indent, ensure_ascii=rng.random() < 0.5)
    if kind == "numbers":
        rows = []
        for _ in range(rng.randint(3, 30)):
            rows.append(
                rng.choice([",", "\t", " ", "; "]).join(
                    str(
                        rng.choice(
                            [
                                rng.randint(0, 10 ** rng.randint(1, 12)),
                                round(rng.uniform(0, 1e4), 3),
                                f"{rng.uniform(0, 1):.2e}",
                            ]
                        )
                    )
                    for _ in range(rng.randint(2, 8))
                )
            )
        return "\n".join(rows)
    if kind == "base64":
        return base64.b64encode(rng.randbytes(rng.randint(16, 1500))).decode()
    if kind == "hex_ids":
        return "\n".join(
            f"{rng.getrandbits(128):032x}"
            if rng.random() < 0.5
            else f"req_{rng.getrandbits(64):016x} sha256:{rng.getrandbits(256):064x}"
            for _ in range(rng.randint(1, 20))
        )
    if kind == "random_words":
        alphabet = string.ascii_letters + string.digits + string.punctuation + "  \n"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 2000)))
    if kind == "whitespace":
        lines = []
        for _ in range(rng.randint(3, 40)):
            lines.append(" " * rng.randint(0, 24) + rng.choice(["key: value", "- item", "}", "", "return x", "#"]))
        return "\n".join(lines) + "\n" * rng.randint(0, 5)
    raise ValueError(kind)


GENERATED = ("json", "numbers", "base64", "hex_ids", "random_words", "whitespace")


def window(text: str, rng: random.Random) -> str:
    size = rng.choice([rng.randint(1, 40), rng.randint(40, 400), len(text)])
    start = rng.randint(0, max(0, len(text) - size))
    return text[start : start + size]


def samples(n: int, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    kinds = list(CORPORA) + list(GENERATED) + ["mixed"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind in CORPORA:
            text = window(CORPORA[kind], rng)
        elif kind == "mixed":
            parts = [window(rng.choice(list(CORPORA.values())), rng) for _ in range(rng.randint(2, 5))]
            parts += [generated(rng.choice(GENERATED), rng) for _ in range(rng.randint(0, 2))]
            rng.shuffle(parts)
            text = "\n".join(parts)
        else:
            text = generated(kind, rng)
        if text:
            out.append((kind, text))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--by-kind", action="store_true", help="also print one row per sample kind")
    args = parser.parse_args()
    try:
        import quicktok
    except ImportError:
        print("quicktok is not installed: pip install quicktok-v1 (in a throwaway venv)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    data = samples(args.samples, rng)
    started = time.perf_counter()
    estimates = [estimate_text_tokens(text) for _, text in data]
    elapsed = time.perf_counter() - started
    chars = sum(len(t) for _, t in data)
    print(
        f"{len(data)} samples, {chars} characters; estimate took {elapsed * 1000:.1f} ms "
        f"({chars / max(elapsed, 1e-9) / 1e6:.1f} M chars/s)\n"
    )
    header = (
        f"{'encoding':<14}{'kind':<26}{'mean':>7}{'p5':>7}{'p95':>7}{'over%':>7}{'max':>7}{'worst (est/exact)':>20}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for name in ENCODINGS:
        enc = quicktok.get_encoding(name)
        exact = [
            len(enc.encode_ordinary(text)) if hasattr(enc, "encode_ordinary") else len(enc.encode(text))
            for _, text in data
        ]
        groups = {"all": range(len(data))}
        if args.by_kind:
            for kind in dict.fromkeys(k for k, _ in data):
                groups[kind] = [i for i, (k, _) in enumerate(data) if k == kind]
        for label, idx in groups.items():
            ratios = [estimates[i] / exact[i] for i in idx if exact[i]]
            over = [i for i in idx if estimates[i] > exact[i]]
            worst = max(idx, key=lambda i: (estimates[i] - exact[i]) / max(exact[i], 1))
            print(
                f"{name:<14}{label:<26}{statistics.fmean(ratios):>7.3f}{percentile(ratios, 0.05):>7.3f}"
                f"{percentile(ratios, 0.95):>7.3f}{100 * len(over) / len(idx):>6.1f}%"
                f"{max(ratios):>7.3f}{f'{estimates[worst]}/{exact[worst]}':>20}"
            )
            if label == "all" and (len(over) > 0.01 * len(idx) or max(ratios) > 1.10):
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
