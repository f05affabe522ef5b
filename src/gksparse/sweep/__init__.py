"""The paper's table from one command: a resumable sweep over datasets x methods x
ablations x seeds, on this machine (`--workers N`) or a Slurm cluster (`--slurm`).

    python -m gksparse.sweep mnistrotated --methods groupwtacnn,randominitcnn --seeds 1,2 \\
        --results R with smoke data_dir=../shared/data

Each cell is one ordinary run of `python -m gksparse.run <dataset>` (config, records, pictures and
resume as ever). `grid` makes the cells, `plan` decides for each (run, resume or skip, from
the run folders already there), `cell` runs one under its lock, `local` and `slurm` run many.
"""
