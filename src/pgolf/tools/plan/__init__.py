"""``pgolf plan``: project a config onto a machine before paying for it (tooling; nothing counted
imports it). ``report.make_plan`` is the entry point; ``flops``, ``hardware``, ``memory``,
``artifact`` and ``evaltime`` each own one projection."""
