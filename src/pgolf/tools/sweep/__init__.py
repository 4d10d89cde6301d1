"""``pgolf sweep``: search a config space with Optuna (tooling; nothing counted imports it).

``spec`` (the sweep file: space, seeds, pruner, hardware), ``runs`` (one ``pgolf train`` run, followed
and judged), ``study`` (the study one machine or many share, and every worker's loop), ``show`` (every
trial, whichever machine ran it), ``commands`` (the CLI). How work is shared: ``pgolf.tools.studies``.
"""
