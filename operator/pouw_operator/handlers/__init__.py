"""kopf handlers, one module per resource. Importing a module registers its handlers with kopf's
default registry (pouw_operator.main imports them all); each names its resource in RESOURCE."""
