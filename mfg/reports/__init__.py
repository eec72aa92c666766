"""Documents the product writes (batch records, certificates, labels) and the site's signing material."""
