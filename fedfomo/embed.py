"""``python -m fedfomo.embed [overrides]``: train the latent split's embedder, cache embeddings and assignments.

Trains the embedder once, caches the embeddings, and clusters for every D (see
:mod:`fedfomo.embeddings` for the cache and :mod:`fedfomo.vgg` for the VGG-11 embedder)::

    python -m fedfomo.embed dataset=cifar10 partition.embedder=vgg11 'distributions=[2,3,4,5,10]'

``package=true`` also copies the assignments into ``fedfomo/assignments/`` (shipped with the package).
"""

from __future__ import annotations

import sys

from fedfomo.embeddings import (
    CacheMismatchError,
    cache_dir_of,
    clusters_from_config,
    clusters_key,
    describe_clusters,
    embedder_settings,
    features_key,
    package_clusters,
)
from fedfomo.runconfig import conf_dir

#: the entry point's own settings (conf/embed.yaml), beside a run's
EXTRA_KEYS = ("distributions", "package")


def main() -> None:
    """``python -m fedfomo.embed [overrides]``: train the embedder, cache embeddings and assignments."""
    import hydra
    from omegaconf import DictConfig, ListConfig

    from fedfomo.config import ConfigError, validate_config
    from fedfomo.data import DataNotFoundError, load_configured

    @hydra.main(config_path=str(conf_dir()), config_name="embed", version_base=None)
    def _run(cfg: DictConfig) -> None:
        try:
            validate_config(cfg, extra_keys=EXTRA_KEYS)
            ds_list = cfg.distributions if cfg.get("distributions") is not None else [cfg.partition.num_distributions]
            if not isinstance(ds_list, (list, ListConfig)) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in ds_list):
                raise ConfigError(f"distributions={ds_list!r} is not supported; allowed: a list of integers >= 1")
            ds = load_configured(cfg.dataset)
            part = cfg.partition
            for d in ds_list:
                train_c, test_c, meta = clusters_from_config(part, ds, int(d))
                split = "" if ds.test_split == "official" else f" [{ds.test_split}]"
                print(f"{cfg.dataset.name}{split} {part.embedder} D={d}: "
                      f"embedder test acc {meta.get('embedder_test_acc', 'n/a')}")
                for line in describe_clusters(ds.train_y.numpy(), train_c, test_c, ds.num_classes, int(d)):
                    print("  " + line)
                if cfg.get("package"):
                    fkey = features_key(ds, str(part.embedder), embedder_settings(str(part.embedder), part.get("vgg")),
                                        int(part.pca_dim), int(part.get("embed_seed", 0)))
                    command = "python -m fedfomo.embed " + " ".join(
                        a for a in sys.argv[1:] if not a.startswith("package="))
                    print(f"  packaged: {package_clusters(cache_dir_of(part), clusters_key(fkey, int(d)), command)}")
            print(f"cache: {cache_dir_of(part)}")
        except (ConfigError, DataNotFoundError, CacheMismatchError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    _run()


if __name__ == "__main__":
    main()
