"""How candidates are scored and chosen: the evolutionary search (PertNAS protocol, done right).

    snapshot.py   Snapshot: real copies of weights, BN buffers, optimizer state, RNG and masks; restore in place
    scoring.py    Candidate, perturb_val: remove a candidate, fine-tune K steps, measure search-val top-1
    selection.py  pure selection rules: most important op, top-k per edge, top-2 edges per node, random and
                  supernet cells (genotypes: space.search_network.genotype_from_edges)
    config.py     EvolutionConfig: every protocol number (presets in configs/)
    training.py   the SGD + cosine schedule of each training phase
    runtime.py    SearchRuntime: fresh networks, (DDP) training, perturb-val with fixed batches, per unit seeds
    stage_a_records.py  the stage-A files (each rank's resume record; their one owner) and their exchange
    stages.py     SearchState and the stages A-D (A also on a supernet), resumable after every decision
    outputs.py    SearchRecorder: checkpoints, scores.json, cell pictures, genotype.json, summary.json
    search.py     run_evolutionary_search(cfg): the whole job (called by search_evolutionary.py);
                  run_search_on_supernet: the PertNAS supernet variant (search_supernet.py --method pertnas)
"""
