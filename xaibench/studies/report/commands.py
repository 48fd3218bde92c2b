"""`xaibench report-table`: a table the workflow writes (.md or .csv) as a standalone HTML page,
which `snakemake --report` shows in the page instead of as a download
(xaibench.studies.report.pages)."""


def add_commands(commands) -> dict:
    """The report's command."""
    page = commands.add_parser("report-table", help="a .md or .csv table as a standalone HTML page (for the report)")
    page.add_argument("source", metavar="FILE.md|FILE.csv")
    page.add_argument("--out", required=True, metavar="FILE.html")
    page.add_argument("--title", default=None,
                      help="the page's title (default: the markdown's first heading, else the file's name)")
    return {"report-table": _report_table}


def _report_table(args) -> int:
    from xaibench.studies.report.pages import write_table_page

    written = write_table_page(args.source, args.out, title=args.title)
    print(f"wrote {written}")
    return 0
