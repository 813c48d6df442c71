"""Library use of publiek's federated DP k-means on any numeric data (``FederatedKMeans``).

A package of its own because it runs both sides in one process: nodes (``node``) and the
coordinator (``coordinator``), which never import each other.
"""

from federated.kmeans import FederatedKMeans
from privacy.budget import rho_for_epsilon

__all__ = ["FederatedKMeans", "rho_for_epsilon"]
