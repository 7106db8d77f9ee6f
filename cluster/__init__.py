"""What a distributed job is, apart from how it runs: the bottom of the house.

TF-free and process-free. `approaches` holds one frozen record per approach (the
only place their names are defined), `tf_config` builds and parses TF_CONFIG, and
`slurm` turns an srun environment into a task's TF_CONFIG. The launcher, the k8s
and Slurm paths, the trainers and the experiments all read these; nothing here
imports them.
"""
