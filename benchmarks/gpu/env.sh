# Source this first in every command on a lent GPU machine (see benchmarks/README.md, "On a lent GPU").
# That machine has torch, transformers, peft, accelerate, h5py, typer, rich and opencv but no diffusers,
# decord or av: they travel as one archive made here, in the repo's ignored .gpu/ folder:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d /tmp/whl \
#       diffusers==0.42.1 av==18.1.0 decord==0.6.0
#   pip install --no-index --no-deps --target /tmp/site /tmp/whl/*.whl
#   tar -cJf .gpu/site.tar.xz -C /tmp site      # ~37 MB: the wheels themselves would not fit the 64 MiB carry
mkdir -p /tmp/gpu && tar -xJf .gpu/site.tar.xz -C /tmp/gpu || return 1
export PYTHONPATH="/tmp/gpu/site:$PWD/src" PYTHONUNBUFFERED=1
python3 -c "import torch, diffusers, transformers, peft, accelerate, av, decord, animlcm.cli
print('torch', torch.__version__, torch.cuda.get_device_name(), '| diffusers', diffusers.__version__,
      '| transformers', transformers.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__)"
