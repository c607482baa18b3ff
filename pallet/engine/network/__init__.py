"""Container networking: network records, network namespaces, CNI plugin chains, published ports,
isolation rules and each container's /etc/hosts (names resolve between peers of user networks)."""
