#include "cswiftletkvm.h"
