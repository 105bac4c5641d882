# Templates, requests and quotas arrive with the provisioning issue.
