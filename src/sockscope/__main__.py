from sockscope.cli.main import launch

launch()
