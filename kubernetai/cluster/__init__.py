"""One Kubernetes cluster behind one ``kubernetai`` stanza: from the API (or manifests) to answers.

Data flows one way: connection → watch/snapshot → objects → store →
names/lookup → records → resolver.  Nothing here imports the DNS server.
"""
