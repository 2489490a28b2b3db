"""Submit a job from Python, follow its events, and fetch its metrics and model.

sparsetrain serve &                     # in another terminal
python examples/sdk_example.py          # SPARSETRAIN_URL / SPARSETRAIN_TOKEN if needed
"""

from __future__ import annotations

from pathlib import Path

from sparsetrain import Client, JobSpec, TopKSpec


def main() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "sdk-example",
            "model": {"kind": "logistic_regression"},
            "data": {"kind": "synthetic", "n": 5000, "d": 500},
            "workers": {"count": 2},
            "batch_size": 8,
            "steps": 1000,
            "eval": {"every": 200},
        }
    )
    spec = spec.model_copy(update={"compression": TopKSpec(ratio=0.02)})
    with Client() as client:
        job = client.submit_job(spec)
        print(f"submitted {job.id}")
        for event in job.events():  # Server-Sent Events until the job ends
            if event.event == "status":
                print("status:", event.json()["status"], "-", event.json()["message"])
        final = job.refresh()
        if final.status.value != "SUCCEEDED":
            raise SystemExit(f"{final.status.value}: {final.error}")
        evaluation = (final.result or {}).get("final") or {}
        print(
            f"SUCCEEDED: train loss {evaluation.get('train_loss', float('nan')):.4f}, "
            f"test accuracy {evaluation.get('test_accuracy', float('nan')):.3f}"
        )
        metrics = job.metrics()
        print(f"{metrics.step_records} steps, {metrics.bytes_sent:,} bytes sent")
        print("model saved to", job.download_model(Path("sdk-example-model.pt")))


if __name__ == "__main__":
    main()
