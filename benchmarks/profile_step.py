"""Where one CPU training step of the default model spends its time (torch.profiler). Prints JSON.

DpDNet-small (base width 8, paper PA heads, task classifier), batch 2, patch 48x64x64, float32, the default
loss with deep supervision and an SGD step, on random inputs (data loading is < 1 % of a step: RESULTS.md).
``--steps`` profiled steps follow 3 warm-up steps; the top ``--top`` operators by self CPU time are listed.

    python benchmarks/profile_step.py [--channels-last] [--threads 2]
"""
from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from unipet.models import create
    from unipet.train.losses import SegmentationLoss

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tasks = ["lung_cancer", "lymphoma", "melanoma", "breast_cancer"]
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=tasks, patch_size=(48, 64, 64), base_width=8,
                   pa_head="paper", task_classifier=True).train()
    memory = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    loss_fn = SegmentationLoss("softmax", dice_per_task=True, dice_skip_empty=True)
    x = torch.randn(2, 2, 48, 64, 64).contiguous(memory_format=memory)
    y = (torch.rand(2, 48, 64, 64) > 0.98).long()
    task = torch.tensor([0, 2])

    def step() -> None:
        out = model(x, task=task)
        loss, _ = loss_fn(out, y, task, getattr(model, "last_task_logits", None))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / args.steps, 2),
            "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // args.steps}
           for e in events[: args.top]]
    print(json.dumps({"benchmark": "profile-train-step", "threads": torch.get_num_threads(),
                      "channels_last": args.channels_last, "step_ms": round(total / 1e3 / args.steps, 1),
                      "top": top}, indent=2))


if __name__ == "__main__":
    main()
