"""One named mesh and one table of logical axis rules."""

from translator.sharding.mesh import AXES, make_mesh, mesh_from_config
from translator.sharding.rules import LOGICAL_AXIS_RULES, sharding_for, shardings, spec_for
