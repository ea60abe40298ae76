"""`python -m vqi.study.sweep -m protocol=conf/study/development.yaml study_seed=1,2,3 hydra/launcher=joblib`:
the protocol's seeds as parallel Hydra jobs (conf/study/sweep/seeds.yaml, docs/study.md).

The job function lives in `vqi.study.sweep`, not here, so that launchers pickle it by reference
(a function of `__main__` would be pickled by value into each job)."""
import hydra

from vqi.study.sweep import SWEEP_CONFIG_DIR, seed_job

main = hydra.main(version_base="1.3", config_path=str(SWEEP_CONFIG_DIR), config_name="seeds")(seed_job)

if __name__ == "__main__":
    main()
