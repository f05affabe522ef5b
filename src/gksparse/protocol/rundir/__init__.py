"""The run folder `results/<dataset>/<id>/`: the one owner of its layout.

    config.json         the run's settings (sacred's record)
    run.json            status, start and resume times, versions, device, a failure's sentence
    metrics.json        per-epoch losses, validation accuracies and wall times of every stage
    cout.txt            what the run printed
    result.json         the result so far, rewritten as each stage finishes
    changes.json        the settings changed on resume
    pretrained.pt       encoder + decoder + head after pretraining (or the random init)
    pretrain_state.pt   the pretraining stage's state after its last finished epoch
    stacked_n{n}.pt     the classifier after the stacked stage of budget n
    finetune_n{n}.pt    the classifier after end-to-end fine-tuning of budget n, with both
                        classifier optimizers' states (the next budget may carry them over)
    reconstructions.png, decoder_filters.png   pictures of the pretrained model
    .lock               held by the process writing the folder (one writer at a time)

Every file is written atomically with the umask's mode (`gksparse.data.files`). A record that is
missing or damaged is a `RecordError`: one sentence naming the file and what to do. Under a
process group (torchrun) rank 0 alone writes, and what the protocol reads back (the result
so far, checkpoints, the pretraining state) rank 0 reads and sends to the other ranks, so
that only rank 0 needs the folder: every rank calls those reading methods together.

`FolderRecords` (rundir.records) reads its records without torch, `RunFolder`
(rundir.folder) reads and writes all of it; `plan_resume` (rundir.resume) decides how a
run continues (what is finished, which settings may change); `latest_run` (rundir.runs)
finds the newest completed run of a results folder.
"""
