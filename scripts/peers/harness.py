#!/usr/bin/env python3
"""Runs every peer of scripts/bench-peers in its own process, one after another, and writes the
results: JSON (all numbers), a Markdown table and a PNG plot (ratios to the best peer of each
weight class). Peak memory is the maximum resident set size of the peer's process as the kernel
reports it to the parent (wait4's ru_maxrss), the same measure for every peer; on GPU rows the
peak device memory is polled from nvidia-smi as well.

Called by scripts/bench-peers, which builds the peers and prepares the weights; the plan (which
peers, which files) comes in as JSON on the command line.
"""

import json
import os
import shlex
import subprocess
import sys
import threading
import time


def nvidia_poll(pid_holder, peak, stop):
    """Polls nvidia-smi for the device memory used by the peer's process."""
    while not stop.is_set():
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) == pid_holder[0]:
                    peak[0] = max(peak[0], float(parts[1]))
        except Exception:
            pass
        stop.wait(0.5)


def run_one(row, timeout, gpu_poll):
    env = dict(os.environ, **row.get("env", {}))
    load_at_start = os.getloadavg()[0]
    t0 = time.time()
    out_path = f"/tmp/bench-peers-{os.getpid()}.out"
    err_path = f"/tmp/bench-peers-{os.getpid()}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(row["cmd"], stdout=out, stderr=err, env=env, cwd=row.get("cwd"))
        peak_dev, stop = [0.0], threading.Event()
        poller = None
        if gpu_poll:
            poller = threading.Thread(target=nvidia_poll, args=([proc.pid], peak_dev, stop), daemon=True)
            poller.start()
        status, rusage = None, None
        while True:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status, rusage = st, ru
                break
            if time.time() - t0 > timeout:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
    stdout = open(out_path).read()
    stderr = open(err_path).read()
    os.unlink(out_path)
    os.unlink(err_path)
    res = dict(row)
    res.pop("env", None)
    res["load_avg_start"] = load_at_start
    res["wall_s"] = time.time() - t0
    res["peak_rss_mib"] = rusage.ru_maxrss / 1024.0  # kilobytes on Linux
    if gpu_poll and peak_dev[0] > 0:
        res["peak_device_mib"] = peak_dev[0]
    if proc.returncode != 0:
        res["error"] = f"exit {proc.returncode}" + (" (timed out)" if time.time() - t0 > timeout else "")
        res["stderr_tail"] = stderr[-2000:]
        return res
    try:
        line = [l for l in stdout.splitlines() if l.strip().startswith("{")][-1]
        parsed = json.loads(line)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"no JSON result: {e}"
        res["stderr_tail"] = (stdout + stderr)[-2000:]
        return res
    # genprm bench nests its numbers under "result".
    m = parsed.get("result", parsed)
    for k in ("load_s", "prefill_tok_s", "ttft_s", "decode_tok_s", "first_token", "last_token", "threads", "peak_device_mib", "system_info"):
        if k in m and m[k] is not None:
            res[k] = m[k]
    if "version" in m and not res.get("version"):
        res["version"] = m["version"]
    if "peak_host_mib" in m:
        res["self_reported_peak_mib"] = m["peak_host_mib"]
    return res


def merge_runs(runs):
    """Best of N on a shared machine: the fastest prefill and decode, the shortest load, the
    largest peak memory (the conservative side), and every run's numbers kept."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = dict(max(ok, key=lambda r: r["decode_tok_s"]))
    best["prefill_tok_s"] = max(r["prefill_tok_s"] for r in ok)
    best["ttft_s"] = min(r["ttft_s"] for r in ok)
    best["load_s"] = min(r["load_s"] for r in ok)
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in ok)
    if len(runs) > 1:
        best["runs"] = [{k: r.get(k) for k in ("prefill_tok_s", "decode_tok_s", "load_s", "peak_rss_mib", "error")} for r in runs]
    return best


def fmt_ratio(v, best, higher_is_better):
    if v is None or best is None or v == 0:
        return ""
    r = v / best if higher_is_better else best / v
    return f" ({r:.2f}×)"


def write_table(meta, results, path):
    classes = []
    for r in results:
        if r["class"] not in classes:
            classes.append(r["class"])
    lines = [
        f"# Peers side by side — {meta['machine_title']}",
        "",
        f"- Machine: {meta['cpu']}; {meta['date']}; load average before the run {meta['load_before']}"
        + (f"; GPU: {meta['gpu']}" if meta.get("gpu") else "; no GPU"),
        f"- Command: `{meta['command']}`",
        f"- Model: {meta['shape_desc']}, random weights, one bf16 safetensors checkpoint "
        "(`scripts/peers/make_random_checkpoint.py`, seed 1) that every peer loads or converts "
        "(GGUF via llama.cpp's `convert_hf_to_gguf.py` to F32, then llama.cpp's quantizer, `pure`: "
        "every matrix, embedding and head included, in the one type).",
        f"- Work: prompt {meta['prompt_tokens']} tokens, {meta['new_tokens']} new tokens, greedy, batch 1, "
        f"the logits of each step read back to the host; threads = {meta['threads']}{' (all cores)' if meta['threads'] == os.cpu_count() else ''} for every peer; "
        "each peer in its own process, one at a time"
        + (f"; best of {meta['repeat']} runs each (fastest prefill and decode, largest peak RSS)." if meta.get("repeat", 1) > 1 else "."),
        "- prefill tok/s = prompt tokens / time to the first token's logits on the host; decode tok/s = "
        "new tokens / time of the decode steps; peak RSS = the process's maximum resident set "
        "(wait4 ru_maxrss; includes the runtime: Python + torch for transformers, Python for llama-cpp-python). "
        "Load time includes reading the weights (genprm: converting bf16 to f32 and quantizing) and a 2-token warm-up.",
        "- (n×) = ratio to the best peer of the same weight class (speed: value / best; memory: best / value), so 1.00× is the best. "
        "first token = the first greedy token after the prompt (the same for every f32 peer when the weights are the same). "
        f"load avg = the machine's 1-minute load average when the row started (the run ended at {meta.get('load_after', 0):.1f}): "
        f"above {meta['threads']} other work shared the cores and slowed that row down (llama.cpp's OpenMP threads suffer most).",
        "",
        "| weights | peer | version | load s | prefill tok/s | decode tok/s | peak RSS MiB | first token | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in classes:
        rows = [r for r in results if r["class"] == c]
        ok = [r for r in rows if "error" not in r]
        bp = max((r["prefill_tok_s"] for r in ok), default=None)
        bd = max((r["decode_tok_s"] for r in ok), default=None)
        bm = min((r["peak_rss_mib"] for r in ok), default=None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {c} | {r['peer']} | {r.get('version', '')} | failed: {r['error']} | | | | | |")
                continue
            mem = f"{r['peak_rss_mib']:.0f}{fmt_ratio(r['peak_rss_mib'], bm, False)}"
            if "peak_device_mib" in r:
                mem += f" + {r['peak_device_mib']:.0f} device"
            lines.append(
                f"| {c} | {r['peer']} | {r.get('version', '')} | {r['load_s']:.1f} | "
                f"{r['prefill_tok_s']:.1f}{fmt_ratio(r['prefill_tok_s'], bp, True)} | "
                f"{r['decode_tok_s']:.2f}{fmt_ratio(r['decode_tok_s'], bd, True)} | {mem} | "
                f"{r.get('first_token', '')} | {r['load_avg_start']:.1f} |" if "load_avg_start" in r else f"{r.get('first_token', '')} | |"
            )
    lines.append("")
    notes = meta.get("notes", [])
    if notes:
        lines += [f"- {n}" for n in notes]
        lines.append("")
    failed = [r for r in results if "error" in r]
    for r in failed:
        lines += [f"<details><summary>{r['peer']} ({r['class']}) failed: {r['error']}</summary>", "", "```",
                  r.get("stderr_tail", "").strip()[-1500:], "```", "</details>", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return "\n".join(lines)


def write_plot(meta, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    classes = []
    for r in ok:
        if r["class"] not in classes:
            classes.append(r["class"])
    metrics = [("prefill_tok_s", "prefill tok/s", True), ("decode_tok_s", "decode tok/s", True), ("peak_rss_mib", "peak RSS", False)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(ok) + 2.2), sharey=True)
    labels, ypos, y = [], [], 0
    order = []
    for c in classes:
        for r in ok:
            if r["class"] == c:
                order.append(r)
                labels.append(f"{c} · {r['peer']}")
                ypos.append(y)
                y += 1
        y += 0.6
    colors = {"genprm": "#d62728", "llama.cpp": "#1f77b4", "candle": "#ff7f0e", "transformers": "#2ca02c"}
    for ax, (key, title, hib) in zip(axes, metrics):
        vals = []
        for r in order:
            group = [o[key] for o in ok if o["class"] == r["class"]]
            best = max(group) if hib else min(group)
            vals.append(r[key] / best if hib else best / r[key])
        bars = ax.barh(ypos, vals, color=[colors.get(r["family"], "#888") for r in order])
        for b, r, v in zip(bars, order, vals):
            absval = f"{r[key]:.1f}" if key != "peak_rss_mib" else f"{r[key]:.0f} MiB"
            ax.text(min(v, 1.0) + 0.01, b.get_y() + b.get_height() / 2, f"{v:.2f}× ({absval})", va="center", fontsize=8)
        ax.set_xlim(0, 1.45)
        ax.axvline(1.0, color="#444", lw=0.6, ls=":")
        ax.set_title(f"{title}: ratio to the best ({'higher' if hib else 'lower'} is better → 1.0)", fontsize=9)
        ax.set_yticks(ypos)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
    fig.suptitle(f"{meta['shape']} · random weights · prompt {meta['prompt_tokens']}, {meta['new_tokens']} new tokens · {meta['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    plan = json.load(open(sys.argv[1]))
    meta, rows = plan["meta"], plan["rows"]
    results = []
    for row in rows:
        print(f"==> {row['class']} · {row['peer']}: {' '.join(shlex.quote(c) for c in row['cmd'])}", file=sys.stderr, flush=True)
        runs = [run_one(row, plan.get("timeout_s", 3600), row.get("gpu", False) and meta.get("gpu"))
                for _ in range(max(1, plan.get("repeat", 1)))]
        res = merge_runs(runs)
        if "error" in res:
            print(f"    failed: {res['error']}\n{res.get('stderr_tail', '')[-800:]}", file=sys.stderr, flush=True)
        else:
            print(f"    prefill {res['prefill_tok_s']:.1f} tok/s, decode {res['decode_tok_s']:.2f} tok/s, "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB, load {res['load_s']:.1f} s", file=sys.stderr, flush=True)
        if "check_cmd" in row and "error" not in res:
            # genprm bench does not print tokens: its first greedy token comes from genprm generate.
            try:
                out = subprocess.run(row["check_cmd"], capture_output=True, text=True, timeout=3600,
                                     env=dict(os.environ, **row.get("env", {}))).stdout
                res["first_token"] = json.loads(out.strip().splitlines()[-1])["ids"][0]
            except Exception as e:  # noqa: BLE001
                print(f"    first-token check failed: {e}", file=sys.stderr)
            res.pop("check_cmd", None)
        results.append(res)
        with open(plan["json_out"], "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    f32_first = {r.get("first_token") for r in results if r["class"] == "f32" and "first_token" in r}
    if len(f32_first) > 1:
        meta.setdefault("notes", []).append(
            f"The f32 peers disagree on the first greedy token ({sorted(f32_first)}): check that they load the same weights.")
    elif f32_first:
        meta.setdefault("notes", []).append(
            f"Same weights check: every f32 peer that reports it picks the same first greedy token ({f32_first.pop()}).")
    meta["load_after"] = os.getloadavg()[0]
    table = write_table(meta, results, plan["md_out"])
    with open(plan["json_out"], "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    try:
        write_plot(meta, results, plan["png_out"])
    except Exception as e:  # noqa: BLE001
        print(f"plot failed: {e}", file=sys.stderr)
    print(table)


if __name__ == "__main__":
    main()
