module mlops-cluster/pause

go 1.22
