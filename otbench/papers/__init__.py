"""The paper reproductions: one package per paper, holding its tables and figures (registered report tables)
and its published values, registered through the `otbench.tables` entry point like any outside package."""
