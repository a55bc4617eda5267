"""Configs served by more than one test module: routing by locality, weights and views."""

from __future__ import annotations

CLUSTERS = """
resolver: {locality: us-central1/us-central1-a}
clusters:
  - {name: primary, locality: us-central1}
  - {name: remote, locality: us-west1}
  - {name: east, locality: us-east1}
  - {name: backup, locality: us-east1}
  - {name: premium, locality: us-central1}
client_localities:
  - {cidr: 127.0.0.0/8, locality: us-central1/us-central1-a}
  - {cidr: 127.0.0.32/27, locality: us-east1/us-east1-b}
  - {cidr: 10.8.0.0/14, locality: us-west1/us-west1-b}
  - {cidr: "fd10::/32", locality: us-east1/us-east1-c}
"""


DISTRIBUTE = CLUSTERS + """
routing:
  - match: "order-service.production"
    distribute:
      - from: "us-central1/*"
        to: {"us-central1/*": 80, "us-west1/*": 20}
    failover:
      - {from: us-east1, to: us-west1}
services:
  - name: order-service
    namespace: production
    endpoints:
      - {address: 10.1.0.1, cluster: primary, locality: us-central1/us-central1-a}
      - {address: 10.1.0.2, cluster: primary, locality: us-central1/us-central1-b}
      - {address: 10.2.0.1, cluster: remote, locality: us-west1/us-west1-a}
      - {address: 10.2.0.2, cluster: remote, locality: us-west1/us-west1-b}
      - {address: 10.3.0.1, cluster: east, locality: us-east1/us-east1-b, ready: false}
      - {address: 10.4.0.1, cluster: premium, locality: europe-west1/europe-west1-b}
"""


WEIGHTS = CLUSTERS + """
routing:
  - match: "payment-service.production"
    weights: {primary: 70, remote: 30}
  - match: "inventory-service.production"
    weights: {primary: 100, backup: 0}
services:
  - name: payment-service
    namespace: production
    endpoints:
      - {address: 10.1.0.1, cluster: primary}
      - {address: 10.1.0.2, cluster: primary}
      - {address: 10.2.0.1, cluster: remote}
  - name: inventory-service
    namespace: production
    endpoints:
      - {address: 10.1.1.1, cluster: primary}
      - {address: 10.5.1.1, cluster: backup}
"""


VIEWS = CLUSTERS + """
routing:
  - match: "catalog-service.production"
    views:
      - {clients: ["10.20.0.0/16", "127.0.0.20/32"], clusters: [premium]}
      - {localities: ["eu-*"], labels: {tier: eu}}
    answer: best_tier
    spill: 1
services:
  - name: catalog-service
    namespace: production
    endpoints:
      - {address: 10.1.0.1, cluster: primary, locality: us-central1/us-central1-a}
      - {address: 10.1.0.2, cluster: primary, locality: us-central1/us-central1-a}
      - {address: 10.1.0.3, cluster: primary, locality: us-central1/us-central1-b}
      - {address: 10.1.0.4, cluster: primary, locality: us-central1/us-central1-c}
      - {address: 10.6.0.1, cluster: premium}
      - {address: 10.6.0.2, cluster: premium}
      - {address: 10.7.0.1, cluster: remote, labels: {tier: eu}}
"""
