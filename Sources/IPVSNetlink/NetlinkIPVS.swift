import CLibmnl
import CLibnlGenl
import IPVS
