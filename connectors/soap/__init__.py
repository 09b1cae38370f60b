"""SOAP 1.1 and 1.2: the ``soap`` connector kind (calling services) and the ``soap`` source
(serving operations from flows).  Modules: ``envelope`` (writing), ``replies`` (reading and
faults), ``wsdl`` (zeep's WSDL model, at load), ``client`` (one step's call), ``connector``
(the kind), ``service`` (serving)."""

from connectors.soap.connector import SoapConnector

__all__ = ["SoapConnector"]
