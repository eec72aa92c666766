"""Documents the product writes (batch records, certificates, labels) and the site's signing material."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# cryptography 51 deprecated DSA (pyca/cryptography#15597): reading any name of
# cryptography.hazmat.primitives.asymmetric.dsa warns. pyHanko 0.38 reads DSAPrivateKey at import
# (pyhanko/sign/signers/pdf_cms.py, line 20) although the product never signs with or accepts a DSA key.
# Ignored by its exact message and the module that reports it, here, before pdf.py imports pyHanko, so that
# neither the suite (warnings are errors) nor an administrator's command prints it; nothing broader.
warnings.filterwarnings(
    "ignore",
    message=r"DSA is deprecated and support will be removed in a future release\. Use a more modern signature "
            r"algorithm\.\Z",
    category=CryptographyDeprecationWarning, module=r"pyhanko\.sign\.signers\.pdf_cms\Z")
