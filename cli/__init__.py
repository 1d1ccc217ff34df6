"""The command-line pieces every door shares: argparse option groups and types (``cli.options``), a clean
stdout, exit codes and progress lines (``cli.output``), the HTML gallery and PNG contact sheet
(``cli.gallery``). Imports only foundation, library and taxonomy: the domain rooms keep plain functions,
argparse stays here."""
