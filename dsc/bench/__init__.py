"""`dsc bench`: time kernel groups and layers against PyTorch and the machine's roofline.

machine.py measures the roofline in the same run (copy bandwidth, matmul peak);
groups.py times each kernel group of a layer's forward beside the same ops in PyTorch
eager; layers.py times whole layers beside dsc.eager, torch.compile and Hugging Face's
layers; records.py writes the JSON records; plots.py draws the PNGs.
"""
