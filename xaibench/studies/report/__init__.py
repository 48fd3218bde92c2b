"""The report: figures (matplotlib on an Agg canvas, cartopy maps) and tables, drawn from the
explanation files one file per method x backend (format: xaibench.studies.report.explanations).

    enso_composite_maps(files, out_png, region=None, ...)   composite relevance maps (Toms et al. 2020)
    convection_relevance(files, out_png)                    relevance per frame x channel; static vs temporal
    radar_relevance(file, out_png, samples=(0,), ...)       one output pixel's relevance and the true footprint
    write_table(csv_path, out_path)                         a CSV as a Markdown or HTML table
    write_table_page(source, out_path)                      a .md or .csv table as a standalone HTML page
                                                            (`xaibench report-table`, for the report)
    read_explanations(files, case)                          read and check explanation files

Maps draw offline from the Natural Earth 110m files shipped in xaibench/studies/data/natural_earth/
(read by xaibench.studies.data.geography; cartopy set-up in xaibench.studies.report.maps).
Captions for `snakemake --report` live in workflows/report/.
"""

from xaibench.studies import lazy_exports

# lazily, so that building the command line (which imports commands.py here) loads no matplotlib
_SOURCES = {
    "ExplanationFile": "xaibench.studies.report.explanations",
    "read_explanations": "xaibench.studies.report.explanations",
    **{name: "xaibench.studies.report.figures" for name in (
        "absolute_shares", "convection_relevance", "enso_composite_maps", "footprint_share", "normalised_composite",
        "radar_relevance", "subset_mask")},
    "table_text": "xaibench.studies.report.tables",
    "write_table": "xaibench.studies.report.tables",
    "table_page": "xaibench.studies.report.pages",
    "write_table_page": "xaibench.studies.report.pages",
}
__all__ = sorted(_SOURCES)
__getattr__ = lazy_exports(__name__, _SOURCES)
