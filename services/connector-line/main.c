/* omnichat-connector-line: the connector engine with the LINE provider. */
#include "line.h"
#include "service.h"

int main(int argc, char **argv)
{
    return conn_main(&line_provider, argc, argv);
}
