"""`xaibench data`: generate a reference data set as netCDF."""

from xaibench.studies.arguments import json_object


def add_commands(commands) -> dict:
    """`xaibench data`."""
    data = commands.add_parser("data", help="generate a data set as netCDF (xaibench.studies.data)")
    data.add_argument("name", help="enso, enso_real, convection, radar, groundtruth, or a name whose --settings give "
                                   "'generator'")
    data.add_argument("--settings", type=json_object, default={}, metavar="JSON",
                      help="the generator's keyword arguments (and 'generator' when NAME is not one)")
    data.add_argument("--out", required=True, metavar="FILE.nc")
    return {"data": _data}


def _data(args) -> int:
    from xaibench.io import write_dataset
    from xaibench.studies.data import GENERATORS, generate

    settings = dict(args.settings)
    generator = settings.pop("generator", args.name)
    if generator not in GENERATORS:
        raise ValueError(f"unknown data set '{generator}'; known: {', '.join(GENERATORS)} "
                         "(or give {{\"generator\": ...}} in --settings)")
    dataset = generate(generator, **settings)
    write_dataset(dataset, args.out)
    print(f"wrote {args.out}: {dict(dataset.sizes)}")
    return 0
