# Turns a binary file (IN) into a C array NAME[] and its length NAME_len, written to OUT, so a
# descriptor set is compiled into the program without xxd.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR n "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
# Lines of 24 bytes keep the generated file readable in a debugger.
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n    " hex "${hex}")
set(body "/* Generated from ${IN}: do not edit. */\n#include <stddef.h>\n#include <stdint.h>\n")
string(APPEND body "extern const uint8_t ${NAME}[];\nextern const size_t ${NAME}_len;\n")
string(APPEND body "const uint8_t ${NAME}[] = {\n    ${hex}\n};\nconst size_t ${NAME}_len = ${n};\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
