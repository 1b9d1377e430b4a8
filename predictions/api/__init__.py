"""The REST API for programs (Django REST framework): token authentication, the predictions
endpoints, a DeepFace-compatible `/analyze`, and the account page where users manage their tokens.
An app of its own (label `api`) so that its model and migrations stay apart from the site's."""
