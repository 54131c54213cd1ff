"""``make bench``: every benchmark, in one run, on this machine."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

import bench_loader  # noqa: E402
import bench_models  # noqa: E402
import bench_train  # noqa: E402

if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.is_available()}")
    bench_loader.main()
    bench_train.main()
    bench_models.main()
